// The status page's script. While the domain is not ready, every data-poll seconds: run the
// checks again (POST …/<token>.json, rate-limited by the edge), fetch the page and put its new
// content in place, without a reload. Stops once the domain is ready.
(() => {
  const main = document.querySelector("main");
  if (!main) return;
  const seconds = Number(main.dataset.poll) || 10;
  const tick = async () => {
    const current = document.querySelector("main");
    if (!current || current.dataset.ready === "true") return;
    try {
      await fetch(location.pathname + ".json", { method: "POST", cache: "no-store" });
      const res = await fetch(location.pathname, { cache: "no-store" });
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
