// podlister's live page: keeps the server-rendered page current by polling index.json.
// Through the load balancer any replica may answer; nginx's ETag makes an unchanged list a
// 304. No framework, no inline code (the Content-Security-Policy allows 'self' only), and
// text goes into the DOM as text, never as HTML.
"use strict";

(() => {
  const POLL_MS = 1000;
  const MAX_BACKOFF_MS = 30000;
  const HIGHLIGHT_MS = 2500;
  const LEAVE_MS = 450; // a little longer than the CSS height transition
  // Each list on the page (by id) and the key of index.json it shows.
  const LISTS = { ready: "members", terminating: "terminating", not_ready: "not_ready" };

  const byId = (id) => document.getElementById(id);
  const pageIp = document.body.dataset.podIp || "";
  // The ETag of each replica's latest 200, by pod IP, all sent in If-None-Match: through a
  // load balancer whichever replica answers can say 304 while its list has not changed.
  const etags = new Map();
  const MAX_ETAGS = 32;
  let failures = 0;
  let failingSince = null;
  let retryAt = null;
  let timer = null;
  let inFlight = false;
  let clockOffsetMs = 0; // server time minus this browser's, from the Date header
  let answeredIp = ""; // the replica (X-Pod-IP) that answered the latest refresh
  let readySet = null; // addresses shown as ready, for announcing changes
  let members = []; // the ready members shown, for naming the replica that answered

  const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;
  const serverNow = () => Date.now() + clockOffsetMs;

  function ago(iso) {
    const at = Date.parse(iso);
    if (Number.isNaN(at)) return "";
    const seconds = Math.max(0, Math.round((serverNow() - at) / 1000));
    if (seconds < 2) return "just now";
    if (seconds < 90) return `${seconds} s ago`;
    const minutes = Math.round(seconds / 60);
    if (minutes < 90) return `${minutes} min ago`;
    const hours = Math.round(minutes / 60);
    if (hours < 48) return `${hours} h ago`;
    return `${Math.round(hours / 24)} days ago`;
  }

  function clockTime(ms) {
    return new Date(ms).toLocaleTimeString([], { hour12: false });
  }

  // <time datetime=...> elements show "4 s ago"; the exact time stays in the tooltip.
  function refreshTimes() {
    for (const time of document.querySelectorAll("time[datetime]")) {
      const iso = time.getAttribute("datetime");
      const text = ago(iso);
      if (text && time.textContent !== text) time.textContent = text;
      if (time.title !== iso) time.title = iso;
    }
    if (retryAt !== null) showFailure();
  }

  function setLive(state, text) {
    const live = byId("live");
    live.dataset.state = state;
    if (live.textContent !== text) live.textContent = text;
  }

  function showFailure() {
    const seconds = Math.max(0, Math.ceil((retryAt - Date.now()) / 1000));
    setLive(
      "error",
      `Cannot reach the server since ${clockTime(failingSince)} (${plural(failures, "failed attempt")}); ` +
        `retrying in ${seconds} s. The list below may be out of date.`,
    );
  }

  function memberItem(member, listId) {
    const li = document.createElement("li");
    const code = document.createElement("code");
    code.textContent = member.address;
    li.append(code);
    updateItem(li, member, listId);
    return li;
  }

  function updateItem(li, member, listId) {
    let meta = li.querySelector(".meta");
    if (!meta) {
      // The server leaves it out where there is nothing to say (the compact page).
      meta = document.createElement("span");
      meta.className = "meta";
      li.querySelector("code").after(meta);
    }
    const parts = [member.pod, member.node && `node ${member.node}`, member.zone && `zone ${member.zone}`];
    const text = parts.filter(Boolean);
    const shown = Array.from(meta.children, (span) => span.textContent);
    if (shown.join("\n") !== text.join("\n")) {
      meta.replaceChildren(
        ...text.map((value) => {
          const span = document.createElement("span");
          span.textContent = value;
          return span;
        }),
      );
    }
    const address = member.address;
    li.classList.toggle("self", address === pageIp);
    if (address === pageIp) li.setAttribute("aria-current", "true");
    else li.removeAttribute("aria-current");
    setBadge(li, "served", address === pageIp, "served this page");
    setBadge(li, "answered", address === answeredIp, "answered the latest refresh");
    // Terminating but still serving: kube-proxy sends it traffic while no pod is ready.
    setBadge(li, "serving", listId === "terminating" && member.serving === true, "still serving");
  }

  function setBadge(li, kind, on, text) {
    let badge = li.querySelector(`.badge[data-kind="${kind}"]`);
    if (on && !badge) {
      let badges = li.querySelector(".badges");
      if (!badges) {
        badges = document.createElement("span");
        badges.className = "badges";
        li.append(badges);
      }
      badge = document.createElement("span");
      badge.className = "badge";
      badge.dataset.kind = kind;
      badge.textContent = text;
      badges.append(badge);
    } else if (!on && badge) {
      badge.remove();
    }
  }

  function leave(li) {
    if (li.classList.contains("leaving")) return;
    li.classList.remove("added");
    li.classList.add("leaving");
    li.setAttribute("aria-hidden", "true");
    li.leaveTimer = setTimeout(() => li.remove(), LEAVE_MS);
  }

  function highlight(li) {
    li.classList.add("added");
    clearTimeout(li.highlightTimer);
    li.highlightTimer = setTimeout(() => li.classList.remove("added"), HIGHLIGHT_MS);
  }

  // Brings one list in line with the server's, in its order: new rows highlighted, gone
  // rows shrink away, the rest stay the same DOM nodes (no flicker, no scroll jump).
  function syncList(list, members, highlightNew) {
    const rows = new Map();
    for (const li of list.children) {
      const code = li.querySelector("code");
      if (code) rows.set(code.textContent, li);
    }
    const wanted = new Set(members.map((member) => member.address));
    for (const [address, li] of rows) if (!wanted.has(address)) leave(li);
    let cursor = list.firstElementChild;
    for (const member of members) {
      while (cursor && cursor.classList.contains("leaving") && !wanted.has(cursor.querySelector("code").textContent)) {
        cursor = cursor.nextElementSibling;
      }
      let li = rows.get(member.address);
      if (li && li.classList.contains("leaving")) {
        clearTimeout(li.leaveTimer);
        li.classList.remove("leaving");
        li.removeAttribute("aria-hidden");
      }
      if (li) {
        updateItem(li, member, list.id);
      } else {
        li = memberItem(member, list.id);
        if (highlightNew) highlight(li);
      }
      if (li === cursor) {
        cursor = cursor.nextElementSibling;
      } else {
        list.insertBefore(li, cursor);
      }
    }
  }

  function changeItem(change) {
    const li = document.createElement("li");
    const time = document.createElement("time");
    time.setAttribute("datetime", change.at);
    time.textContent = ago(change.at);
    const delta = document.createElement("span");
    delta.className = "delta";
    if (change.added_count) {
      const plus = document.createElement("span");
      plus.className = "plus";
      plus.textContent = `+${plural(change.added_count, "pod")}`;
      delta.append(plus);
    }
    if (change.added_count && change.removed_count) delta.append(" ");
    if (change.removed_count) {
      const minus = document.createElement("span");
      minus.className = "minus";
      minus.textContent = `\u2212${plural(change.removed_count, "pod")}`;
      delta.append(minus);
    }
    const who = document.createElement("span");
    who.className = "who";
    const named = [];
    if (change.added.length) named.push(change.added.join(", "));
    if (change.removed.length) named.push(`gone: ${change.removed.join(", ")}`);
    const unnamed = change.added_count + change.removed_count - change.added.length - change.removed.length;
    who.textContent = named.join("; ") + (unnamed > 0 ? ` and ${unnamed} more` : "");
    li.append(time, " ", delta, "\n", who);
    li.dataset.key = `${change.at}|${change.added_count}|${change.removed_count}`;
    return li;
  }

  function syncChanges(changes) {
    const list = byId("changes");
    const known = new Map();
    for (const li of list.children) {
      const time = li.querySelector("time");
      const key = li.dataset.key || (time && time.getAttribute("datetime"));
      known.set(key, li);
    }
    const items = changes.map((change) => {
      const key = `${change.at}|${change.added_count}|${change.removed_count}`;
      return known.get(key) || known.get(change.at) || changeItem(change);
    });
    items.forEach((li, index) => {
      if (list.children[index] !== li) list.insertBefore(li, list.children[index] || null);
    });
    while (list.children.length > items.length) list.lastElementChild.remove();
    byId("changes-empty").hidden = changes.length > 0;
  }

  function announce(members) {
    const now = new Set(members.map((member) => member.address));
    if (readySet !== null) {
      const added = [...now].filter((address) => !readySet.has(address));
      const removed = [...readySet].filter((address) => !now.has(address));
      const parts = [];
      if (added.length) parts.push(`${plural(added.length, "pod")} added${added.length <= 3 ? `: ${added.join(", ")}` : ""}`);
      if (removed.length) parts.push(`${plural(removed.length, "pod")} removed${removed.length <= 3 ? `: ${removed.join(", ")}` : ""}`);
      if (parts.length) byId("announce").textContent = `${parts.join("; ")}. ${plural(now.size, "ready pod")}.`;
    }
    readySet = now;
  }

  function valid(data) {
    return (
      data !== null &&
      typeof data === "object" &&
      Object.values(LISTS).every(
        (key) =>
          Array.isArray(data[key]) &&
          data[key].every((member) => member !== null && typeof member === "object" && typeof member.address === "string"),
      ) &&
      Array.isArray(data.changes) &&
      typeof data.generated_at === "string"
    );
  }

  function apply(data) {
    const count = data.members.length;
    byId("ready-count").textContent = plural(count, "ready pod");
    byId("ready-total").textContent = String(count);
    document.title = document.title.replace(/^(.*: )?.*$/, `$1${plural(count, "ready pod")}`);
    byId("ready-empty").hidden = count > 0;
    byId("serving-note").hidden = !data.terminating.some((member) => member.serving === true);
    byId("no-objects").hidden = data.objects !== 0;
    for (const [id, key] of Object.entries(LISTS)) {
      const listed = data[key];
      syncList(byId(id), listed, id === "ready" && readySet !== null);
      if (id !== "ready") {
        byId(`${id}-section`).hidden = listed.length === 0;
        byId(`${id}-total`).textContent = String(listed.length);
      }
    }
    announce(data.members);
    syncChanges(data.changes);
    const generated = byId("generated");
    generated.setAttribute("datetime", data.generated_at);
    const stale = byId("stale");
    stale.hidden = !data.stale_since;
    if (data.stale_since) byId("stale-since").setAttribute("datetime", data.stale_since);
    byId("compact").hidden = !data.compact;
    const latency = data.programming_latency_ms;
    byId("programming-fact").hidden = typeof latency !== "number";
    if (typeof latency === "number") byId("programming").textContent = (latency / 1000).toFixed(1);
    refreshTimes();
  }

  function noteAnswer(response, members) {
    const ip = response.headers.get("X-Pod-IP") || "";
    const holder = members.find((member) => member.address === ip);
    const name = (holder && holder.pod) || response.headers.get("X-Served-By") || "";
    answeredIp = ip;
    const who = name && ip ? `${name} (${ip})` : name || ip || "the server";
    byId("answered").textContent = `${who} at ${clockTime(Date.now())}`;
    for (const id of Object.keys(LISTS)) {
      // Leaving rows too: one that answered an earlier refresh must not keep saying so
      // while it shrinks away (a replica that has not caught up yet can drop it).
      for (const li of byId(id).children) {
        const code = li.querySelector("code");
        if (code) setBadge(li, "answered", code.textContent === ip, "answered the latest refresh");
      }
    }
  }

  function rememberEtag(ip, tag) {
    etags.delete(ip);
    if (!tag) return;
    etags.set(ip, tag);
    if (etags.size > MAX_ETAGS) etags.delete(etags.keys().next().value);
  }

  async function poll() {
    timer = null;
    if (document.hidden) {
      setLive("paused", "Paused while this tab is hidden; it refreshes as soon as you come back.");
      return;
    }
    inFlight = true;
    try {
      const headers = { Accept: "application/json" };
      if (etags.size) headers["If-None-Match"] = [...etags.values()].join(", ");
      const response = await fetch("index.json", { headers, cache: "no-store" });
      if (response.status !== 304 && !response.ok) throw new Error(`HTTP ${response.status}`);
      const date = Date.parse(response.headers.get("Date") || "");
      if (!Number.isNaN(date)) clockOffsetMs = date - Date.now();
      if (response.status === 200) {
        let data;
        try {
          data = await response.json();
        } catch {
          throw new Error("not JSON");
        }
        if (!valid(data)) throw new Error("unexpected content");
        rememberEtag(response.headers.get("X-Pod-IP") || "", response.headers.get("ETag"));
        members = data.members;
        apply(data);
      }
      noteAnswer(response, members);
      failures = 0;
      failingSince = null;
      retryAt = null;
      setLive("live", `Live: checked every second, last at ${clockTime(Date.now())}.`);
      schedule(POLL_MS);
    } catch (error) {
      failures += 1;
      if (failingSince === null) failingSince = Date.now();
      const delay = Math.min(MAX_BACKOFF_MS, POLL_MS * 2 ** failures);
      retryAt = Date.now() + delay;
      showFailure();
      console.info(`podlister: refresh failed (${error.message}); retrying in ${delay / 1000} s`);
      schedule(delay);
    } finally {
      inFlight = false;
    }
  }

  function schedule(ms) {
    clearTimeout(timer);
    timer = setTimeout(poll, ms);
  }

  document.addEventListener("visibilitychange", () => {
    if (document.hidden) return; // the next poll sees it and pauses
    if (!inFlight && (timer === null || retryAt === null)) {
      clearTimeout(timer);
      poll();
    }
  });

  setInterval(refreshTimes, 1000);
  refreshTimes();
  poll();
})();
