// The API tokens page: create a token of the player's team (its secret shown once, here only), list the
// team's tokens and revoke one. CTFd finds the team from its session on every call; the page sends only
// the form. Uses ctfhost.js's call (CTFd's CSRF nonce) and node.
(function () {
  "use strict";
  const page = document.getElementById("ctfhost-tokens-page");
  if (!page || !window.CtfhostPanel) return;
  const { call, node } = window.CtfhostPanel;

  const form = document.getElementById("ctfhost-token-form");
  const table = document.querySelector("#ctfhost-tokens tbody");
  const listError = document.getElementById("ctfhost-tokens-error");
  const created = document.getElementById("ctfhost-token-new");

  function when(iso, none) {
    if (!iso) return node("span", "text-muted", none);
    const el = node("span", null, new Date(iso).toLocaleString());
    el.title = iso;
    return el;
  }

  function show(el, text) {
    el.textContent = text || "";
    el.classList.toggle("d-none", !text);
  }

  async function load() {
    const reply = await call("GET", "/tokens");
    table.replaceChildren();
    show(listError, reply.success ? "" : reply.message);
    if (!reply.success) return;
    if (!reply.data.length) {
      const row = node("tr");
      const cell = node("td", "text-muted text-center", "Your team has no tokens.");
      cell.colSpan = 6;
      row.appendChild(cell);
      table.appendChild(row);
      return;
    }
    reply.data.forEach((token) => {
      const row = node("tr", "ctfhost-token");
      row.dataset.token = token.id;
      row.appendChild(node("td", "ctfhost-token-name", token.name));
      const scopes = node("td");
      (token.scopes || []).forEach((scope) => scopes.appendChild(node("code", "ctfhost-scope me-1 d-inline-block", scope)));
      row.appendChild(scopes);
      [[token.created_at, ""], [token.expires_at, "never"], [token.last_used_at, "never"]].forEach(([iso, none]) => {
        const cell = node("td");
        cell.appendChild(when(iso, none));
        row.appendChild(cell);
      });
      const actions = node("td", "text-end");
      const revoke = node("button", "btn btn-sm btn-outline-danger ctfhost-token-revoke", "Revoke");
      revoke.type = "button";
      revoke.addEventListener("click", () => revokeToken(token, revoke));
      actions.appendChild(revoke);
      row.appendChild(actions);
      table.appendChild(row);
    });
  }

  async function revokeToken(token, button) {
    if (!window.confirm("Revoke the token \u201c" + token.name + "\u201d? Programs using it stop working: new requests are refused at once, and open event streams end within seconds.")) return;
    button.disabled = true;
    const reply = await call("DELETE", "/tokens/" + encodeURIComponent(token.id));
    if (!reply.success) {
      button.disabled = false;
      show(listError, reply.message);
      return;
    }
    await load();
  }

  function clearErrors() {
    form.querySelectorAll(".is-invalid").forEach((el) => el.classList.remove("is-invalid"));
    form.querySelectorAll("[data-ctfhost-field]").forEach((el) => (el.textContent = ""));
    show(document.getElementById("ctfhost-token-error"), "");
  }

  function fieldError(field, message) {
    const feedback = form.querySelector("[data-ctfhost-field='" + field + "']");
    if (!feedback) return false;
    feedback.textContent = message;
    const input = form.querySelector("[name='" + field + "']");
    if (input && input.type !== "checkbox") input.classList.add("is-invalid");
    return true;
  }

  function reveal(token) {
    document.getElementById("ctfhost-token-new-name").textContent = "\u201c" + token.name + "\u201d";
    document.getElementById("ctfhost-token-secret").value = token.token;
    page.querySelectorAll("[data-ctfhost-secret]").forEach((el) => (el.textContent = token.token));
    created.classList.remove("d-none");
    created.scrollIntoView({ block: "nearest" });
  }

  function forget() {
    // the secret leaves the page: nothing can show it again
    document.getElementById("ctfhost-token-secret").value = "";
    page.querySelectorAll("[data-ctfhost-secret]").forEach((el) => (el.textContent = ""));
    created.classList.add("d-none");
  }

  async function copy() {
    const input = document.getElementById("ctfhost-token-secret");
    const button = document.getElementById("ctfhost-token-copy");
    try {
      await navigator.clipboard.writeText(input.value);
    } catch (error) {
      input.select(); // no clipboard API (plain http): select it, and try the old way
      document.execCommand("copy");
    }
    button.textContent = "Copied";
    window.setTimeout(() => (button.textContent = "Copy"), 2000);
  }

  if (form) {
    const expires = form.querySelector("[name='expires']");
    const date = form.querySelector("[name='expires_on']");
    const custom = () => date.classList.toggle("d-none", expires.value !== "custom");
    expires.addEventListener("change", custom);
    custom();
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      clearErrors();
      const button = document.getElementById("ctfhost-token-create");
      button.disabled = true;
      const body = {
        name: form.querySelector("[name='name']").value,
        expires: expires.value,
        expires_on: expires.value === "custom" ? date.value : null,
        scopes: Array.from(form.querySelectorAll("[name='scopes']:checked")).map((box) => box.value),
      };
      const reply = await call("POST", "/tokens", body);
      button.disabled = false;
      if (!reply.success) {
        const errors = reply.errors || {};
        const placed = Object.keys(errors).filter((field) => fieldError(field, errors[field]));
        const rest = Object.keys(errors).filter((field) => !placed.includes(field)).map((field) => field + ": " + errors[field]);
        show(document.getElementById("ctfhost-token-error"), [reply.message].concat(rest).join(" "));
        return;
      }
      form.querySelector("[name='name']").value = "";
      reveal(reply.data);
      await load();
    });
  }
  document.getElementById("ctfhost-token-copy").addEventListener("click", copy);
  document.getElementById("ctfhost-token-done").addEventListener("click", forget);
  load();
})();
