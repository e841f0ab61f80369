// The ipywidgets HTML manager typesets widget labels with MathJax 2's API (MathJax.Hub.Queue); this site runs
// MathJax 3, which has no Hub. Give every object assigned to window.MathJax (the page's configuration, then
// MathJax 3 itself) a Hub.Queue that typesets with MathJax 3, so the saved widgets render without errors.
(function () {
  var current = window.MathJax;
  function withHub(mathjax) {
    if (mathjax && typeof mathjax === "object" && !mathjax.Hub) {
      Object.defineProperty(mathjax, "Hub", {enumerable: false, value: {Queue: function (job) {
        var element = job && job[2], loaded = window.MathJax;
        if (element && loaded && loaded.typesetPromise) {
          loaded.typesetPromise([element]).catch(function () {});
        }
      }}});
    }
    return mathjax;
  }
  Object.defineProperty(window, "MathJax", {configurable: true,
    get: function () { return current; }, set: function (value) { current = withHub(value); }});
  withHub(current);
})();
