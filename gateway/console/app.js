// The buyer console: signs in with the identity provider (authorization
// code with PKCE, a public client; the endpoints come from the gateway's
// /console/config.json), then shows the buyer API's answers.
// Every text from the API is put into the page as text, never as markup.

const store = window.sessionStorage;
const TOKEN = "cmp.console.token";
const REFRESH = "cmp.console.refresh";
const ID_TOKEN = "cmp.console.id";
const PKCE = "cmp.console.pkce";
const CHOSEN = "cmp.console.organization";
const $ = (id) => document.getElementById(id);

class SignedOut extends Error {}

/** An element with attributes and children (strings become text nodes). */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value);
  }
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}

function base64url(bytes) {
  return btoa(String.fromCharCode(...new Uint8Array(bytes))).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function random(length) {
  return base64url(crypto.getRandomValues(new Uint8Array(length)));
}

function redirectUri() {
  return `${location.origin}/console/`;
}

function say(message, isError = false) {
  const status = $("status");
  status.textContent = message;
  status.className = isError ? "error" : "";
}

async function signIn(config) {
  const verifier = random(32);
  const state = random(16);
  const challenge = base64url(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier)));
  store.setItem(PKCE, JSON.stringify({ verifier, state }));
  const url = new URL(config.authorizationEndpoint);
  url.search = new URLSearchParams({
    response_type: "code",
    client_id: config.clientId,
    redirect_uri: redirectUri(),
    scope: "openid",
    state,
    code_challenge: challenge,
    code_challenge_method: "S256",
  }).toString();
  location.assign(url.toString());
}

async function finishSignIn(config, params) {
  const saved = JSON.parse(store.getItem(PKCE) || "null");
  store.removeItem(PKCE);
  history.replaceState(null, "", "/console/");
  if (params.get("error")) {
    throw new Error(`the identity provider refused the sign-in: ${params.get("error_description") || params.get("error")}`);
  }
  if (!saved || saved.state !== params.get("state")) {
    throw new Error("this sign-in answer is not for a sign-in this page started: sign in again");
  }
  const answer = await fetch(config.tokenEndpoint, {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({
      grant_type: "authorization_code",
      code: params.get("code"),
      redirect_uri: redirectUri(),
      client_id: config.clientId,
      code_verifier: saved.verifier,
    }),
  });
  const body = await answer.json().catch(() => ({}));
  if (!answer.ok || !body.access_token) {
    throw new Error(`the identity provider gave no token: ${body.error_description || body.error || answer.status}`);
  }
  keep(body);
}

/** Keeps a token answer: the access token, and the refresh and ID tokens when given. */
function keep(body) {
  store.setItem(TOKEN, body.access_token);
  if (body.refresh_token) store.setItem(REFRESH, body.refresh_token);
  if (body.id_token) store.setItem(ID_TOKEN, body.id_token);
}

/** A new access token from the refresh token, if there is one and the provider still honours it. */
async function refreshed(config) {
  const refresh = store.getItem(REFRESH);
  if (!refresh) return false;
  const answer = await fetch(config.tokenEndpoint, {
    method: "POST",
    headers: { "content-type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({ grant_type: "refresh_token", refresh_token: refresh, client_id: config.clientId }),
  }).catch(() => null);
  const body = answer && answer.ok ? await answer.json().catch(() => ({})) : {};
  if (!body.access_token) {
    store.removeItem(REFRESH);
    return false;
  }
  keep(body);
  return true;
}

let settings = null;

async function api(path, options = {}, retried = false) {
  const headers = { authorization: `Bearer ${store.getItem(TOKEN)}` };
  if (options.body) headers["content-type"] = "application/json";
  const answer = await fetch(path, { ...options, headers });
  const body = await answer.json().catch(() => ({}));
  if (answer.status === 401) {
    // An access token lives minutes: renew it once with the refresh token, then ask again.
    if (!retried && (await refreshed(settings))) return api(path, options, true);
    store.removeItem(TOKEN);
    throw new SignedOut(body.error ? body.error.message : "signed out");
  }
  if (!answer.ok) throw new Error(body.error ? body.error.message : `the gateway answered ${answer.status}`);
  return { status: answer.status, body };
}

function organizationPath(organization) {
  return `/v1/me/organizations/${encodeURIComponent(organization)}`;
}

async function showWallet(organization) {
  const { body } = await api(`${organizationPath(organization)}/wallet`);
  $("balance").textContent = String(body.balance);
  $("funded").textContent = body.funded ? `(${body.funded[1]})` : "";
  const rows = body.grants.map((g) =>
    el("tr", {}, el("td", {}, g.id), el("td", {}, String(g.credits)), el("td", {}, String(g.unspent)),
      el("td", {}, g.source), el("td", {}, g.expiresAt || "never")));
  $("grants").querySelector("tbody").replaceChildren(...rows);
}

function keyRow(organization, instance, key, refresh) {
  const path = `${organizationPath(organization)}/instances/${encodeURIComponent(instance)}/keys/${encodeURIComponent(key.name)}`;
  const act = (action) => async () => {
    try {
      const { status, body } = await api(`${path}/${action}`, { method: "POST", body: "{}" });
      await refresh(status === 201 ? body : null, action === "revoke" ? `Key ${key.name} revoked.` : null);
    } catch (error) {
      fail(error);
    }
  };
  const live = key.state === "active" || key.state === "issuing";
  return el("tr", { "data-key": key.name },
    el("td", {}, key.name), el("td", {}, key.state), el("td", {}, key.publicId || ""), el("td", {}, key.createdAt || ""),
    el("td", {},
      live ? el("button", { type: "button", onclick: act("rotate"), "aria-label": `Rotate key ${key.name}` }, "Rotate") : null,
      live ? el("button", { type: "button", onclick: act("revoke"), "aria-label": `Revoke key ${key.name}` }, "Revoke") : null));
}

async function showInstance(organization, instance, container) {
  const keysPath = `${organizationPath(organization)}/instances/${encodeURIComponent(instance.name)}/keys`;
  const shown = el("div", { id: `new-key-${instance.name}`, "aria-live": "polite" });
  const tbody = el("tbody");
  const refresh = async (issued, message) => {
    if (issued && issued.key) {
      shown.replaceChildren(
        el("p", {}, `Key ${issued.name}: copy it now. It is shown once, here, and never again.`),
        el("output", { class: "plaintext", "data-key-plaintext": issued.name }, issued.key));
    } else if (issued) {
      shown.replaceChildren(el("p", {}, issued.message || `Key ${issued.name} is kept in Vault.`));
    } else if (message) {
      shown.replaceChildren(el("p", {}, message));
    }
    const { body } = await api(keysPath);
    tbody.replaceChildren(...body.keys.map((k) => keyRow(organization, instance.name, k, refresh)));
  };
  const name = el("input", { id: `key-name-${instance.name}`, name: "name", required: "", pattern: "[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?", placeholder: "production" });
  const form = el("form", {
    onsubmit: async (event) => {
      event.preventDefault();
      try {
        const { body } = await api(keysPath, { method: "POST", body: JSON.stringify({ name: name.value }) });
        name.value = "";
        await refresh(body, null);
      } catch (error) {
        fail(error);
      }
    },
  }, el("label", { for: `key-name-${instance.name}` }, "New key"), name, el("button", { type: "submit" }, "Create key"));
  const state = instance.ready
    ? el("p", { class: "state-ready" }, "Ready")
    : el("p", { class: "state-not-ready" }, `Not ready: ${instance.reason || "waiting"}${instance.message ? ` (${instance.message})` : ""}`);
  container.append(el("article", { class: "instance", "data-instance": instance.name },
    el("h3", {}, instance.name),
    el("p", {}, `${instance.offering} ${instance.version}, plan ${instance.plan}${instance.suspended ? ", suspended" : ""}`),
    state,
    el("p", {}, "Runs: ", el("code", {}, `POST ${location.origin}${instance.runs}`)),
    el("table", {}, el("caption", {}, "API keys"),
      el("thead", {}, el("tr", {}, ...["Key", "State", "Public id", "Created", "Actions"].map((h) => el("th", { scope: "col" }, h)))),
      tbody),
    form, shown));
  await refresh(null, null);
}

async function showOrganization(organization) {
  say(`Loading ${organization}…`);
  await showWallet(organization);
  const { body } = await api(`${organizationPath(organization)}/instances`);
  const container = $("instances");
  container.replaceChildren();
  if (body.instances.length === 0) container.append(el("p", {}, "No agents yet."));
  for (const instance of body.instances) await showInstance(organization, instance, container);
  say("");
}

function fail(error) {
  if (error instanceof SignedOut) {
    $("console").hidden = true;
    $("sign-in").hidden = false;
    say(`Your session ended (${error.message}): sign in again.`, true);
  } else {
    say(error.message, true);
  }
}

async function main() {
  const config = await (await fetch("/console/config.json")).json();
  settings = config;
  $("sign-in-button").addEventListener("click", () => signIn(config).catch(fail));
  $("sign-out").addEventListener("click", () => {
    // Ends the provider's session too, so the next sign-in asks for the password again.
    const idToken = store.getItem(ID_TOKEN);
    for (const name of [TOKEN, REFRESH, ID_TOKEN, CHOSEN]) store.removeItem(name);
    if (!config.endSessionEndpoint) return location.assign("/console/");
    const url = new URL(config.endSessionEndpoint);
    const params = { client_id: config.clientId, post_logout_redirect_uri: redirectUri() };
    if (idToken) params.id_token_hint = idToken;
    url.search = new URLSearchParams(params).toString();
    location.assign(url.toString());
  });
  const params = new URLSearchParams(location.search);
  if (params.has("code") || params.has("error")) await finishSignIn(config, params);
  if (!store.getItem(TOKEN)) {
    $("sign-in").hidden = false;
    say("");
    return;
  }
  const { body } = await api("/v1/me");
  $("who").textContent = `Signed in as ${body.user}`;
  $("sign-out").hidden = false;
  const select = $("organization");
  select.replaceChildren(...body.organizations.map((o) =>
    el("option", { value: o.name }, `${o.displayName || o.name} (${o.role || "member"})`)));
  const chosen = store.getItem(CHOSEN);
  if (body.organizations.some((o) => o.name === chosen)) select.value = chosen;
  select.addEventListener("change", () => {
    store.setItem(CHOSEN, select.value);
    showOrganization(select.value).catch(fail);
  });
  $("console").hidden = false;
  if (body.organizations.length === 0) {
    say("No Organization lists you yet: ask its admin to add you.");
    return;
  }
  await showOrganization(select.value);
}

main().catch(fail);
