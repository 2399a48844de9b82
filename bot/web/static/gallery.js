// Tessera web gallery: infinite scroll over /api/shares and the copy button.
// No inline script is allowed (Content-Security-Policy), so everything is here. Cards are
// built with DOM calls and textContent: nothing from the API is ever parsed as HTML.
"use strict";

function makeCard(item) {
  const link = document.createElement("a");
  link.className = "card";
  link.href = item.page;
  link.dataset.id = String(item.id);
  const img = document.createElement("img");
  img.src = item.thumbs["512"];
  img.srcset = item.srcset;
  img.sizes = "(max-width: 600px) 50vw, 25vw";
  img.width = item.width;
  img.height = item.height;
  img.loading = "lazy";
  img.alt = item.title;
  const meta = document.createElement("span");
  meta.className = "meta";
  const title = document.createElement("span");
  title.className = "title";
  title.textContent = item.title;
  const likes = document.createElement("span");
  likes.className = "likes";
  likes.textContent = "\u2665 " + item.likes;
  meta.append(title, likes);
  link.append(img, meta);
  return link;
}

function setUpScroll() {
  const grid = document.getElementById("grid");
  const more = document.getElementById("more");
  if (!grid || !more || !("IntersectionObserver" in window)) return;
  let loading = false;
  async function loadMore() {
    const next = grid.dataset.next;
    if (loading || !next) return;
    loading = true;
    try {
      const api = grid.dataset.api;
      const url = api + (api.includes("?") ? "&" : "?") + "offset=" + encodeURIComponent(next);
      const response = await fetch(url, { headers: { Accept: "application/json" } });
      if (!response.ok) return;
      const page = await response.json();
      for (const item of page.items) grid.append(makeCard(item));
      grid.dataset.next = page.next_offset === null ? "" : String(page.next_offset);
      if (!grid.dataset.next) more.remove();
    } finally {
      loading = false;
    }
  }
  more.querySelector("a")?.addEventListener("click", (event) => { event.preventDefault(); loadMore(); });
  new IntersectionObserver((entries) => {
    if (entries.some((e) => e.isIntersecting)) loadMore();
  }, { rootMargin: "600px" }).observe(more);
}

function selectText(element) {
  const range = document.createRange();
  range.selectNodeContents(element);
  const selection = window.getSelection();
  selection.removeAllRanges();
  selection.addRange(range);
}

function setUpCopy() {
  const button = document.getElementById("copy");
  if (!button) return;
  button.addEventListener("click", async () => {
    const source = document.getElementById(button.dataset.copy);
    const text = source.textContent;
    try {
      await navigator.clipboard.writeText(text);
      button.textContent = "Copied!";
    } catch (error) {
      // No clipboard (plain http on another host): select it for Ctrl+C instead.
      selectText(source);
      button.textContent = "Selected: press Ctrl+C";
    }
    setTimeout(() => { button.textContent = "Copy prompt"; }, 2500);
  });
}

document.addEventListener("DOMContentLoaded", () => { setUpScroll(); setUpCopy(); });
