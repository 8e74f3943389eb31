// The status page's script. While the domain is not ready, every data-poll seconds: run the
// checks again (POST …/<token>.json, rate-limited by the edge), fetch the page and put its new
// content in place, without a reload. Stops once the domain is ready, and when the address no
// longer opens (expired, revoked, the domain removed: 404), saying so. A page without
// data-poll is never polled.
(() => {
  const main = document.querySelector("main");
  if (!main || !main.dataset.poll) return;
  const seconds = Number(main.dataset.poll) || 10;
  const gone = (current) => {
    const p = document.createElement("p");
    p.className = "notice";
    p.textContent =
      "This address no longer opens (it expired, was revoked, or the domain was removed): ask for a new one.";
    current.prepend(p);
  };
  const tick = async () => {
    const current = document.querySelector("main");
    if (!current || current.dataset.ready === "true") return;
    try {
      const checked = await fetch(location.pathname + ".json", {
        method: "POST",
        cache: "no-store",
      });
      const res =
        checked.status === 404 ? checked : await fetch(location.pathname, { cache: "no-store" });
      if (res.status === 404) return gone(current);
      if (res.ok) {
        const doc = new DOMParser().parseFromString(await res.text(), "text/html");
        const next = doc.querySelector("main");
        if (next) current.replaceWith(next);
      }
    } catch (e) {
      // Offline for a moment: the next tick tries again.
    }
    setTimeout(tick, seconds * 1000);
  };
  setTimeout(tick, seconds * 1000);
})();
