// Runs in the page before its own scripts (Playwright's init script): records what a
// test asserts on afterwards, so nothing depends on catching an event at the right moment.
window.__probe = { csp: [], fetches: 0, highlighted: [], loads: (window.__probe?.loads ?? 0) + 1 };
document.addEventListener("securitypolicyviolation", (event) => {
  window.__probe.csp.push(`${event.violatedDirective} ${event.blockedURI}`);
});
const realFetch = window.fetch.bind(window);
window.fetch = (...args) => { window.__probe.fetches += 1; return realFetch(...args); };
// New rows arrive already highlighted (childList); kept rows may be highlighted later.
const noteHighlighted = (node) => {
  if (node.nodeType === 1 && node.classList.contains("added")) {
    const code = node.querySelector("code");
    if (code) window.__probe.highlighted.push(code.textContent);
  }
};
new MutationObserver((records) => {
  for (const record of records) {
    if (record.type === "attributes") noteHighlighted(record.target);
    else record.addedNodes.forEach(noteHighlighted);
  }
}).observe(document, { subtree: true, childList: true, attributes: true, attributeFilter: ["class"] });
