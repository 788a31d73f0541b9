// derain's web page: pick or drop a photo, POST it to /v1/derain, show before/after with a slider,
// offer the result for download and say how long it took. Plain JS, nothing loaded from elsewhere.
// A server started with an access token answers 401 without it: the page then shows a password field;
// the token is kept in sessionStorage (this tab only, gone when it closes) and sent as
// "Authorization: Bearer TOKEN" on every request to the API.
"use strict";

const $ = (id) => document.getElementById(id);
const els = {
  dropzone: $("dropzone"), file: $("file"), format: $("format"), quality: $("quality"), status: $("status"),
  result: $("result"), before: $("before"), after: $("after"), divider: $("divider"), slider: $("slider"),
  download: $("download"), time: $("time"),
  strength: $("strength"), strengthAuto: $("strength-auto"), strengthValue: $("strength-value"),
  login: $("login"), token: $("token"),
};
const TOKEN_KEY = "derain-token";
const TOKEN_CHARS = /^[A-Za-z0-9._~+\/-]+=*$/;  // what the server takes (RFC 6750's b64token)
let lastFile = null;  // derained again when the strength changes
let latest = 0;  // the newest request: an older one's answer is dropped (the strength changed meanwhile)
const urls = { before: null, after: null };

function setStatus(text, isError = false) {
  els.status.textContent = text;
  els.status.classList.toggle("error", isError);
}

function showObjectUrl(key, img, blob) {
  if (urls[key]) URL.revokeObjectURL(urls[key]);
  urls[key] = URL.createObjectURL(blob);
  img.src = urls[key];
  return urls[key];
}

function setSlider(percent) {
  els.after.style.clipPath = `inset(0 0 0 ${percent}%)`;
  els.divider.style.left = `${percent}%`;
}

function fileNameFrom(response, fallback) {
  const match = /filename="([^"]+)"/.exec(response.headers.get("Content-Disposition") || "");
  return match ? match[1] : fallback;
}

function authHeaders() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  return token ? { Authorization: `Bearer ${token}` } : {};
}

// The server answered 401: forget the token that was sent (if any) and ask for one.
function askForToken() {
  const hadToken = sessionStorage.getItem(TOKEN_KEY) !== null;
  sessionStorage.removeItem(TOKEN_KEY);
  els.login.hidden = false;
  setStatus(hadToken ? "That access token was not accepted: enter it again."
                     : "This server needs an access token.", hadToken);
  document.body.dataset.state = "token";
  els.token.focus();
}

// Whether the server wants a token: asked once on load, so the field shows before a photo is sent.
async function checkAccess() {
  let response;
  try {
    response = await fetch("/v1/models", { headers: authHeaders() });
  } catch {
    return;  // a derain will say that the server cannot be reached
  }
  if (response.status === 401 && latest === 0) askForToken();  // once a derain started, it asks itself
}

async function errorMessage(response) {
  try {
    const body = await response.json();
    return `${response.status}: ${body.error}`;
  } catch {
    return `${response.status} ${response.statusText}`;
  }
}

async function derainFile(file) {
  if (!file) return;
  lastFile = file;
  const mine = ++latest;
  document.body.dataset.state = "working";
  els.result.hidden = true;
  els.download.removeAttribute("href");
  els.time.textContent = "";
  setStatus(`Deraining ${file.name}…`);
  showObjectUrl("before", els.before, file);

  const params = new URLSearchParams();
  if (els.format.value) params.set("format", els.format.value);
  if (els.quality.value) params.set("quality", els.quality.value);
  params.set("strength", strengthParam());
  const body = new FormData();
  body.append("file", file, file.name);

  const started = performance.now();
  let response;
  try {
    response = await fetch(`/v1/derain?${params}`, { method: "POST", body, headers: authHeaders() });
  } catch (err) {
    if (mine !== latest) return;
    setStatus(`Cannot reach the server: ${err.message}`, true);
    document.body.dataset.state = "error";
    return;
  }
  if (mine !== latest) return;
  if (response.status === 401) {
    askForToken();  // the photo is derained once a token is entered
    return;
  }
  if (!response.ok) {
    setStatus(await errorMessage(response), true);
    document.body.dataset.state = "error";
    return;
  }
  const blob = await response.blob();
  if (mine !== latest) return;
  const roundTrip = performance.now() - started;
  const serverMs = Number(response.headers.get("X-Process-Time-Ms"));

  els.download.href = showObjectUrl("after", els.after, blob);
  els.download.download = fileNameFrom(response, "derained");
  await els.after.decode().catch(() => {});
  const server = Number.isFinite(serverMs) && serverMs > 0 ? `${Math.round(serverMs)} ms on the server, ` : "";
  els.time.textContent = `Took ${server}${Math.round(roundTrip)} ms in all`;
  setSlider(els.slider.value);
  els.result.hidden = false;
  setStatus(`Done: ${file.name}`);
  document.body.dataset.state = "done";
}

function strengthParam() {
  return els.strengthAuto.checked ? "auto" : String(Number(els.strength.value) / 100);
}

function showStrength() {
  els.strength.disabled = els.strengthAuto.checked;
  els.strengthValue.textContent = els.strengthAuto.checked ? "auto" : `${els.strength.value}%`;
}

els.login.addEventListener("submit", (event) => {
  event.preventDefault();
  const token = els.token.value.trim();
  if (!TOKEN_CHARS.test(token)) {
    setStatus("An access token is made of letters, digits and - . _ ~ + / (then = at the end).", true);
    return;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  els.token.value = "";
  els.login.hidden = true;
  setStatus("");
  document.body.dataset.state = "";
  if (lastFile) derainFile(lastFile);
  else checkAccess();
});
els.strengthAuto.addEventListener("change", () => { showStrength(); derainFile(lastFile); });
els.strength.addEventListener("input", showStrength);
els.strength.addEventListener("change", () => derainFile(lastFile));
els.file.addEventListener("change", () => derainFile(els.file.files[0]));
els.slider.addEventListener("input", () => setSlider(els.slider.value));
for (const name of ["dragenter", "dragover"]) {
  els.dropzone.addEventListener(name, (event) => {
    event.preventDefault();
    els.dropzone.classList.add("over");
  });
}
for (const name of ["dragleave", "drop"]) {
  els.dropzone.addEventListener(name, () => els.dropzone.classList.remove("over"));
}
els.dropzone.addEventListener("drop", (event) => {
  event.preventDefault();
  const file = event.dataTransfer.files[0];
  if (file) derainFile(file);
});
document.addEventListener("dragover", (event) => event.preventDefault());  // a near miss must not open the file
document.addEventListener("drop", (event) => event.preventDefault());
checkAccess();
