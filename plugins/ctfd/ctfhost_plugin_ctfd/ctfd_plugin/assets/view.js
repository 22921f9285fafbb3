// The challenge window of a ctfhost challenge: CTFd's standard flag form plus the instance panel (ctfhost.js).
CTFd._internal.challenge.data = undefined;
CTFd._internal.challenge.renderer = null;
CTFd._internal.challenge.render = null;
CTFd._internal.challenge.preRender = function () {};

CTFd._internal.challenge.postRender = function () {
  const root = (window.init && window.init.urlRoot) || "";
  const start = () => window.CtfhostPanel.mountAll(document);
  if (window.CtfhostPanel) {
    start();
    return;
  }
  let script = document.querySelector("script[data-ctfhost-panel]");
  if (!script) {
    script = document.createElement("script");
    script.src = root + "/plugins/ctfhost/assets/ctfhost.js";
    script.dataset.ctfhostPanel = "1";
    document.head.appendChild(script);
  }
  script.addEventListener("load", start, { once: true });
};

CTFd._internal.challenge.submit = function (preview) {
  const challenge_id = parseInt(CTFd.lib.$("#challenge-id").val());
  const submission = CTFd.lib.$("#challenge-input").val();
  const params = preview ? { preview: true } : {};
  return CTFd.api.post_challenge_attempt(params, { challenge_id, submission });
};
