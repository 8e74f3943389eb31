// The onboarding page's only script: a form that runs checks says so while they run (they can
// take a few seconds) and cannot be sent twice.
document.addEventListener("submit", (event) => {
  const form = event.target;
  if (!form.classList.contains("busy-on-submit")) return;
  for (const button of form.querySelectorAll("button[data-busy]")) {
    button.textContent = button.dataset.busy;
    // Disabled after this event, so the form still submits.
    setTimeout(() => { button.disabled = true; }, 0);
  }
});
