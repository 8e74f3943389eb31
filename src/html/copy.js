// Copy buttons of the fix records: the clipboard where the page may use it, else the value is
// selected for the reader to copy.
document.addEventListener("click", (event) => {
  const button = event.target.closest("button.copy");
  if (!button) return;
  const input = button.parentElement.querySelector("input");
  const done = () => {
    button.textContent = "Copied";
    setTimeout(() => { button.textContent = "Copy"; }, 1500);
  };
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(button.dataset.copy).then(done, () => input.select());
  } else {
    input.select();
  }
});
