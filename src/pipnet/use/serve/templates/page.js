// Show only the gallery and sheet rows whose class names or #ids contain the filter text.
document.getElementById("filter").addEventListener("input", function (event) {
  // "#12" must match prototype 12 exactly; other words match any part of a class name.
  const words = event.target.value.toLowerCase().trim().split(/\s+/).filter(Boolean);
  for (const row of document.querySelectorAll(".filterable")) {
    const text = row.dataset.filter, tokens = text.split(" ");
    row.hidden = !words.every(function (w) { return w.startsWith("#") ? tokens.includes(w) : text.includes(w); });
  }
});
