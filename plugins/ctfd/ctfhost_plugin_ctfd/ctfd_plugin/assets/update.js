CTFd.plugin.run((_CTFd) => {});
