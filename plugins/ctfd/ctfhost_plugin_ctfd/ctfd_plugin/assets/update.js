// The admin page of a ctfhost challenge. CTFd's Delete button ignores a refused delete; show ctfhost's
// reason (e.g. ctfhost unreachable: the challenge is kept on both sides) as CTFd shows a refused edit.
CTFd.plugin.run((_CTFd) => {
  const CTFd = window.CTFd;
  if (!CTFd || CTFd.fetch.ctfhostWatched) return;
  const original = CTFd.fetch;
  const watched = function (url, options) {
    const reply = original.apply(this, arguments);
    const path = "/api/v1/challenges/" + window.CHALLENGE_ID;
    if (options && options.method === "DELETE" && url === path) {
      reply
        .then((response) => response.clone().json())
        .then((body) => {
          if (body && body.success === false) {
            const errors = body.errors ? Object.values(body.errors).flat() : [];
            CTFd.ui.ezq.ezAlert({ title: "Error", body: errors.join("\n") || body.message || "Not deleted.", button: "OK" });
          }
        })
        .catch(() => CTFd.ui.ezq.ezAlert({ title: "Error", body: "The challenge could not be deleted.", button: "OK" }));
    }
    return reply;
  };
  watched.ctfhostWatched = true;
  CTFd.fetch = watched;
});
