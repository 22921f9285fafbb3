// The instance panel of a ctfhost challenge: status, countdown and Launch / Open / Renew / Restart / Stop,
// and each endpoint besides main (its Open, or its TCP commands).
// Used in the challenge window (view.js mounts it) and on the "My instances" page. Plain DOM, no
// framework, so it works with any CTFd theme; requests carry CTFd's CSRF nonce like CTFd's own.
(function () {
  "use strict";
  if (window.CtfhostPanel) return;

  const API = "/api/v1/plugins/ctfhost";
  const TICK_MS = 1000;
  const PENDING_POLLS = 180; // give up polling a pending instance after ~3 minutes
  const REFRESH_TICKS = 30; // re-read a running instance every 30 s
  const MAX_TICKS = 24 * 3600; // a panel left open stops its timer after a day
  const WARNING = ["cooldown", "quota", "capacity", "not_launchable", "unavailable", "renew_limit", "renew_not_needed", "ended", "gone", "closed", "locked", "no_team", "login"];
  const LABELS = {
    pending: ["Starting", "bg-info text-dark"],
    running: ["Running", "bg-success"],
    error: ["Failed", "bg-danger"],
    expired: ["Expired", "bg-secondary"],
    destroyed: ["Stopped", "bg-secondary"],
  };

  const urlRoot = () => (window.init && window.init.urlRoot) || "";
  const nonce = () => (window.init && window.init.csrfNonce) || "";

  async function call(method, path, body) {
    let response;
    try {
      response = await fetch(urlRoot() + API + path, {
        method: method,
        credentials: "same-origin",
        headers: { Accept: "application/json", "Content-Type": "application/json", "CSRF-Token": nonce() },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (error) {
      return { success: false, code: "unavailable", message: "CTFd could not be reached. Check your connection." };
    }
    let payload = null;
    try {
      payload = await response.json();
    } catch (error) {
      payload = null;
    }
    if (!payload || typeof payload !== "object" || payload.success === undefined) {
      const message = payload && payload.message ? payload.message : "Unexpected answer from CTFd (HTTP " + response.status + ").";
      payload = { success: false, code: response.status === 403 ? "forbidden" : "error", message: message };
    }
    return payload;
  }

  function clock(seconds) {
    seconds = Math.max(0, Math.floor(seconds));
    const h = Math.floor(seconds / 3600);
    const m = Math.floor((seconds % 3600) / 60);
    const s = seconds % 60;
    const two = (n) => String(n).padStart(2, "0");
    return h > 0 ? h + ":" + two(m) + ":" + two(s) : m + ":" + two(s);
  }

  function node(tag, className, text) {
    const el = document.createElement(tag);
    if (className) el.className = className;
    if (text !== undefined && text !== null) el.textContent = text;
    return el;
  }

  function commands(connection, className) {
    // a TCP endpoint: TLS with SNI on the shared port, reached with these commands (a click selects one whole)
    const box = node("div", className);
    Object.keys(connection).sort().forEach((name) => {
      const line = node("div", "text-break");
      line.appendChild(node("span", "text-muted", name + ": "));
      line.appendChild(node("code", "user-select-all", connection[name]));
      box.appendChild(line);
    });
    return box;
  }

  class Panel {
    constructor(el, options) {
      this.el = el;
      this.challengeId = options.challengeId;
      this.title = options.title || null;
      this.titleHref = options.titleHref || null;
      this.instance = options.instance === undefined ? undefined : options.instance;
      this.message = null;
      this.unknown = false; // ctfhost could not be asked: the team may or may not have an instance
      this.busy = false;
      this.ticks = 0;
      this.polls = 0;
      this.cooldownUntil = 0;
      el.dataset.ctfhostMounted = "1";
      el.ctfhostPanel = this;
    }

    start() {
      this.timer = window.setInterval(() => this.tick(), TICK_MS);
      if (this.instance === undefined) {
        this.refresh();
      } else {
        this.received(this.instance);
      }
    }

    stopTimer() {
      window.clearInterval(this.timer);
      this.timer = null;
    }

    since(seconds) {
      // a server-given number of seconds, counted down since it arrived
      if (seconds === null || seconds === undefined) return null;
      return seconds - (Date.now() - this.receivedAt) / 1000;
    }

    secondsLeft() {
      return this.instance ? this.since(this.instance.seconds_left) : null;
    }

    renewableIn() {
      return this.instance ? this.since(this.instance.renewable_in) : null;
    }

    tick() {
      this.ticks += 1;
      if (!document.body.contains(this.el) || this.ticks > MAX_TICKS) {
        this.stopTimer();
        return;
      }
      const instance = this.instance;
      if (instance && instance.status === "pending" && !this.busy) {
        this.polls += 1;
        if (this.polls <= PENDING_POLLS) {
          this.refresh();
        } else if (this.polls === PENDING_POLLS + 1) {
          this.show("error", "The instance is taking unusually long to start. Reload the page to check again.");
        }
        return;
      }
      const left = this.secondsLeft();
      if (instance && instance.active && left !== null && left <= 0 && !this.busy) {
        this.refresh();
        return;
      }
      if (instance && instance.active && this.ticks % REFRESH_TICKS === 0 && !this.busy) {
        this.refresh();
        return;
      }
      this.updateClocks();
    }

    received(instance) {
      if (instance && this.instance && instance.id !== this.instance.id) this.polls = 0;
      this.unknown = false;
      this.instance = instance;
      this.receivedAt = Date.now();
      this.render();
    }

    async refresh() {
      if (this.loading) return;
      this.loading = true;
      try {
        await this.load();
      } finally {
        this.loading = false;
      }
    }

    async load() {
      const known = this.instance;
      // a pending instance is followed by id, so a failed launch shows its reason
      const path = known && known.id ? "/instances/" + encodeURIComponent(known.id) : "/challenges/" + this.challengeId + "/instance";
      const reply = await call("GET", path);
      if (reply.success) {
        const instance = reply.data;
        if (instance && !instance.active) {
          if (instance.status === "error") {
            this.show("error", "The instance failed" + (instance.error ? ": " + instance.error : "") + ". Launch it again, and tell the organizers if it keeps failing.");
          } else if (known && known.active) {
            this.show("info", instance.status === "expired" ? "The instance expired." : "The instance was stopped.");
          }
          this.received(null);
        } else {
          this.received(instance);
        }
      } else if (reply.code === "gone") {
        this.received(null);
      } else {
        // never "No instance" (and Launch) when ctfhost could not say: the team may have one running
        if (!this.instance) {
          this.instance = null;
          this.unknown = true;
        }
        this.show(reply.code, reply.message);
      }
    }

    retry() {
      this.message = null;
      this.render();
      this.refresh();
    }

    async act(method, path, confirmText, done) {
      if (this.busy) return;
      if (confirmText && !window.confirm(confirmText)) return;
      this.busy = true;
      this.message = null;
      this.render();
      const reply = await call(method, path, method === "POST" ? {} : undefined);
      this.busy = false;
      if (reply.success) {
        done(reply.data);
      } else {
        if (reply.code === "cooldown" && reply.retry_after) this.cooldownUntil = Date.now() + reply.retry_after * 1000;
        if (reply.code === "gone" || reply.code === "ended") this.instance = null;
        if (reply.code === "unavailable" && !this.instance) this.unknown = true; // a launch may or may not have happened
        this.show(reply.code, reply.message);
      }
    }

    launch() {
      this.act("POST", "/challenges/" + this.challengeId + "/instance", null, (instance) => {
        this.polls = 0;
        this.received(instance);
      });
    }

    renew() {
      this.act("POST", "/instances/" + encodeURIComponent(this.instance.id) + "/renew", null, (instance) => {
        const added = instance.seconds_added;
        this.received(instance);
        this.show("success", added ? "Renewed: " + clock(added) + " added." : "Renewed.");
      });
    }

    restart() {
      this.act(
        "POST",
        "/instances/" + encodeURIComponent(this.instance.id) + "/restart",
        "Restart the instance? It starts again from scratch, at a new address.",
        (instance) => {
          this.polls = 0;
          this.received(instance);
        },
      );
    }

    stop() {
      this.act("DELETE", "/instances/" + encodeURIComponent(this.instance.id), "Stop the instance? Everything in it is lost.", () => {
        this.received(null);
        this.show("info", "The instance was stopped.");
      });
    }

    show(code, text) {
      this.message = { code: code, text: text };
      this.render();
    }

    openHref(next) {
      // CTFd's sign-in route asks ctfhost for an access link to the endpoint whose host `next` is on (a path: main)
      const query = "instance=" + encodeURIComponent(this.instance.id) + "&next=" + encodeURIComponent(next || "/");
      return urlRoot() + "/plugins/ctfhost/access?" + query;
    }

    openLink(className, next) {
      const running = this.instance.status === "running";
      const open = node("a", "btn btn-sm " + className + (running && !this.busy ? "" : " disabled"), "Open");
      open.href = running ? this.openHref(next) : "#";
      open.target = "_blank";
      open.rel = "noopener";
      if (!running) open.setAttribute("aria-disabled", "true");
      return open;
    }

    otherEndpoints() {
      // every endpoint but main, which the panel shows as it always has (address, commands, Open)
      const endpoints = (this.instance && this.instance.endpoints) || [];
      return endpoints.filter((endpoint) => endpoint && endpoint.name !== "main");
    }

    endpointList() {
      const list = node("div", "small mb-2 ctfhost-endpoints");
      list.appendChild(node("div", "text-muted", "Other addresses:"));
      this.otherEndpoints().forEach((endpoint) => {
        const row = node("div", "border-start ps-2 mt-1 ctfhost-other-endpoint");
        row.dataset.endpoint = endpoint.name;
        const line = node("div", "d-flex flex-wrap align-items-center gap-2 text-break");
        const tcp = endpoint.protocol === "tcp";
        line.appendChild(node("span", "fw-bold ctfhost-endpoint-name", endpoint.name));
        if (!tcp || !endpoint.connection) line.appendChild(node("code", "ctfhost-endpoint-url", endpoint.url));
        // a host of its own: opening it takes an access link of its own, which sign-in finds by the URL
        if (!tcp && endpoint.url) line.appendChild(this.openLink("btn-outline-success py-0 ctfhost-open-endpoint", endpoint.url + "/"));
        row.appendChild(line);
        if (tcp && endpoint.connection) row.appendChild(commands(endpoint.connection, "ctfhost-connection"));
        list.appendChild(row);
      });
      return list;
    }

    button(label, style, handler, disabled) {
      const b = node("button", "btn btn-sm " + style, label);
      b.type = "button";
      b.disabled = Boolean(disabled || this.busy);
      b.addEventListener("click", handler);
      return b;
    }

    updateClocks() {
      const countdown = this.el.querySelector(".ctfhost-countdown");
      const left = this.secondsLeft();
      if (countdown && left !== null) {
        countdown.textContent = "Expires in " + clock(left);
        countdown.classList.toggle("text-danger", left < 300);
      }
      const renew = this.el.querySelector(".ctfhost-renew");
      if (renew) {
        const running = this.instance && this.instance.status === "running";
        const noneLeft = this.instance && this.instance.renewals_left === 0;
        const later = Math.ceil(this.renewableIn() || 0);
        renew.disabled = this.busy || !running || noneLeft || later > 0;
        renew.textContent = running && !noneLeft && later > 0 ? "Renew (in " + clock(later) + ")" : "Renew";
        renew.title = noneLeft ? "No renewals left" : later > 0 ? "Renewing now would add almost nothing" : "";
      }
      const launch = this.el.querySelector(".ctfhost-launch");
      const wait = Math.ceil((this.cooldownUntil - Date.now()) / 1000);
      if (launch) {
        launch.disabled = this.busy || wait > 0;
        launch.textContent = wait > 0 ? "Launch (" + wait + " s)" : "Launch";
      }
    }

    render() {
      const el = this.el;
      const instance = this.instance;
      el.replaceChildren();
      const card = node("div", "card ctfhost-card");
      const body = node("div", "card-body py-3");
      card.appendChild(body);

      if (this.title) {
        const heading = node("h5", "card-title mb-2");
        if (this.titleHref) {
          const link = node("a", "", this.title);
          link.href = this.titleHref;
          heading.appendChild(link);
        } else {
          heading.textContent = this.title;
        }
        body.appendChild(heading);
      }

      const head = node("div", "d-flex flex-wrap align-items-center mb-2");
      if (instance === undefined) {
        head.appendChild(node("span", "text-muted small", "Loading your instance…"));
      } else if (!instance && this.unknown) {
        head.appendChild(node("span", "badge bg-warning text-dark me-2 ctfhost-status", "Unknown"));
        head.appendChild(node("span", "text-muted small", "Your team's instance could not be checked."));
      } else if (!instance) {
        head.appendChild(node("span", "badge bg-secondary me-2", "No instance"));
        head.appendChild(node("span", "text-muted small", "Launch a private instance of this challenge for your team."));
      } else {
        const label = LABELS[instance.status] || [instance.status, "bg-secondary"];
        head.appendChild(node("span", "badge " + label[1] + " me-2 ctfhost-status", label[0]));
        if (instance.status === "running") head.appendChild(node("span", "ms-auto small fw-bold ctfhost-countdown"));
      }
      body.appendChild(head);

      if (instance && instance.active && instance.renewals_left !== null && instance.renewals_left !== undefined) {
        body.appendChild(node("div", "small text-muted mb-2 ctfhost-renewals", "Renewals left: " + instance.renewals_left));
      }

      if (instance && instance.endpoint) {
        const where = node("div", "small mb-2 text-break");
        where.appendChild(node("span", "text-muted", "Address: "));
        where.appendChild(node("code", "ctfhost-endpoint", instance.endpoint));
        body.appendChild(where);
      }

      if (instance && instance.connection) {
        // a TCP instance: TLS with SNI on the shared port, reached with these commands
        body.appendChild(commands(instance.connection, "small mb-2 ctfhost-connection"));
      }

      if (instance && this.otherEndpoints().length) {
        body.appendChild(this.endpointList());
      }

      if (instance && instance.status === "pending") {
        const progress = node("div", "progress mb-2");
        progress.style.height = "1.25rem";
        const bar = node("div", "progress-bar progress-bar-striped progress-bar-animated w-100", "Starting your instance…");
        bar.setAttribute("role", "progressbar");
        progress.appendChild(bar);
        body.appendChild(progress);
      }

      const buttons = node("div", "d-flex flex-wrap gap-2 ctfhost-buttons");
      if (!instance && this.unknown) {
        buttons.appendChild(this.button("Try again", "btn-outline-primary ctfhost-retry", () => this.retry()));
      } else if (!instance) {
        if (instance !== undefined) {
          const launch = this.button(this.busy ? "Launching…" : "Launch", "btn-primary ctfhost-launch", () => this.launch());
          buttons.appendChild(launch);
        }
      } else {
        const running = instance.status === "running";
        if (instance.protocol !== "tcp") buttons.appendChild(this.openLink("btn-success ctfhost-open", "/"));
        buttons.appendChild(this.button("Renew", "btn-outline-secondary ctfhost-renew", () => this.renew(), !running)); // updateClocks decides
        buttons.appendChild(this.button("Restart", "btn-outline-warning ctfhost-restart", () => this.restart()));
        buttons.appendChild(this.button("Stop", "btn-outline-danger ctfhost-stop", () => this.stop()));
      }
      body.appendChild(buttons);

      if (this.message && this.message.text) {
        const code = this.message.code;
        const kind = code === "success" ? "success" : code === "info" ? "info" : WARNING.includes(code) ? "warning" : "danger";
        body.appendChild(node("div", "alert alert-" + kind + " mt-3 mb-0 py-2 small ctfhost-message", this.message.text));
      }

      el.appendChild(card);
      this.updateClocks();
    }
  }

  function mountAll(doc, attempts) {
    // the challenge window is rendered after this script runs: look again for a few seconds
    const panels = (doc || document).querySelectorAll(".ctfhost-panel[data-ctfhost-challenge]:not([data-ctfhost-mounted])");
    panels.forEach((el) => new Panel(el, { challengeId: el.dataset.ctfhostChallenge }).start());
    const left = attempts === undefined ? 100 : attempts;
    if (!panels.length && left > 0) window.setTimeout(() => mountAll(doc, left - 1), 50);
  }

  async function mountList(el) {
    const reply = await call("GET", "/instances");
    el.replaceChildren();
    if (!reply.success) {
      const alert = node("div", "alert alert-warning", reply.message);
      const again = node("button", "btn btn-sm btn-outline-primary ms-2 ctfhost-retry", "Try again");
      again.type = "button";
      again.addEventListener("click", () => mountList(el));
      alert.appendChild(again);
      el.appendChild(alert);
      return;
    }
    if (!reply.data.length) {
      el.appendChild(node("p", "text-muted", "Your team has no running instances. Launch one from a challenge."));
      return;
    }
    reply.data.forEach((instance) => {
      const slot = node("div", "col-md-6 mb-3");
      const holder = node("div", "ctfhost-panel");
      slot.appendChild(holder);
      el.appendChild(slot);
      const id = instance.ctfd_challenge_id;
      new Panel(holder, {
        challengeId: id,
        instance: instance,
        title: instance.challenge_name,
        titleHref: id ? urlRoot() + "/challenges#" + encodeURIComponent(instance.challenge_name + "-" + id) : null,
      }).start();
    });
  }

  // call and node serve the API tokens page too (tokens.js)
  window.CtfhostPanel = { Panel: Panel, mountAll: mountAll, mountList: mountList, clock: clock, call: call, node: node };
})();
