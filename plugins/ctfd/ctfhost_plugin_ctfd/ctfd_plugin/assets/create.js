CTFd.plugin.run((_CTFd) => {
  // Blank dynamic-scoring fields are left out, so a static challenge is not refused for them.
  const form = document.querySelector("#create-chal-entry-div form");
  if (!form) return;
  const fn = form.querySelector("select[name=function]");
  const dynamic = ["decay", "minimum"].map((name) => form.querySelector(`input[name=${name}]`));
  const toggle = () => {
    const on = fn.value !== "static";
    dynamic.forEach((input) => {
      if (on) { input.setAttribute("name", input.dataset.name || input.name); input.required = true; }
      else { input.dataset.name = input.dataset.name || input.name; input.removeAttribute("name"); input.required = false; }
    });
  };
  fn.addEventListener("change", toggle);
  toggle();
});
