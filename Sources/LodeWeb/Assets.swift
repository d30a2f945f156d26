/// The workspace's only assets, served by the node itself (nothing comes
/// from elsewhere: the node may run with no internet).
public enum Assets {
    public static let css = """
        :root { --ink: #1d2330; --muted: #667085; --line: #d8dde6; --accent: #9a3412; --mark: #fff3c4; --bg: #fbfbfa; }
        * { box-sizing: border-box; }
        body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--ink); background: var(--bg); }
        header { display: flex; gap: 1rem; align-items: center; padding: .6rem 1.2rem; background: #1d2330; color: #fff; }
        header a { color: #fff; text-decoration: none; margin-right: .8rem; }
        .brand { font-weight: 700; letter-spacing: .02em; }
        nav { display: flex; align-items: center; gap: .4rem; flex: 1; justify-content: flex-end; }
        .who { color: #cbd2dc; margin-right: 1rem; }
        main { padding: 1rem 1.2rem 3rem; }
        .crumbs { padding: .5rem 1.2rem 0; color: var(--muted); }
        .crumbs a { color: var(--muted); }
        h1 { font-size: 1.4rem; margin: .4rem 0 1rem; } h1 .pk { color: var(--accent); font-family: ui-monospace, monospace; }
        table { border-collapse: collapse; background: #fff; }
        th, td { border: 1px solid var(--line); padding: .3rem .5rem; text-align: left; vertical-align: top; }
        th a { color: inherit; }
        table.rows td { max-width: 22rem; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
        td.marked, tr.marked td, tr.marked th { background: var(--mark); }
        .mark { color: var(--accent); }
        .null { color: var(--muted); font-style: italic; }
        .count, .meta, .site { color: var(--muted); font-size: .9em; }
        .person { font-weight: 600; }
        .filters { display: flex; flex-wrap: wrap; gap: .6rem; align-items: center; margin-bottom: .8rem; }
        .filters details { width: 100%; } .filters details label { margin-right: .6rem; }
        .row-page { display: grid; grid-template-columns: minmax(0, 1fr) 26rem; gap: 1.5rem; }
        .panel { background: #fff; border: 1px solid var(--line); padding: .8rem; }
        .annotation { border-bottom: 1px solid var(--line); padding: .5rem 0; }
        .annotation.resolved .text { color: var(--muted); }
        .tag { background: #eef2f7; border-radius: 3px; padding: 0 .3rem; margin-right: .2rem; font-size: .85em; }
        .replies { list-style: none; padding-left: 1rem; border-left: 3px solid var(--line); }
        textarea { width: 100%; min-height: 3.5rem; }
        form.inline { display: inline; }
        .deleted { color: #b42318; font-weight: 600; }
        tr.won td { font-weight: 600; }
        .error { position: fixed; bottom: 1rem; left: 1rem; right: 1rem; background: #fee4e2; color: #7a271a; padding: .6rem 1rem; border: 1px solid #fda29b; }
        .notice { background: #fff3c4; padding: .6rem; }
        .pager a { margin-left: 1rem; }
        .asof { background: #fff4d6; border-left: 3px solid #c98a00; padding: 0.4rem 0.6rem; }
        .peer { padding: .4rem 0; border-bottom: 1px solid var(--line); }
        progress { width: 20rem; }
        """

    public static let js = """
        // Lodestone workspace: forms with data-api send their fields to the
        // client API with the page's CSRF token; the server checks everything.
        (function () {
          "use strict";
          var csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
          function show(message) {
            var e = document.getElementById("error");
            if (!e) { alert(message); return; }
            e.textContent = message; e.hidden = false;
          }
          function literal(v) { return v === "" ? "NULL" : "'" + v.split("'").join("''") + "'"; }
          document.addEventListener("submit", function (event) {
            var form = event.target;
            if (!form.dataset || !form.dataset.api) return;
            event.preventDefault();
            if (form.dataset.kind === "import") { upload(form); return; }
            var body = {};
            new FormData(form).forEach(function (v, k) { body[k] = v; });
            if (form.dataset.kind === "keep") {
              body.value = JSON.parse(body.value);
            } else if (form.dataset.kind === "cell") {
              body = { sql: 'UPDATE "' + body.table + '" SET "' + body.column + '" = ' + literal(body.value) +
                            ' WHERE "' + body.key + '" = ' + literal(body.pk) };
            } else {
              if ("tags" in body) body.tags = body.tags.split(",").map(function (s) { return s.trim(); }).filter(Boolean);
              if (body.column === "") delete body.column;
            }
            var buttons = form.querySelectorAll("button");
            buttons.forEach(function (b) { b.disabled = true; });
            fetch(form.dataset.api, {
              method: form.dataset.method || "POST", credentials: "same-origin",
              headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
              body: JSON.stringify(body)
            }).then(function (res) {
              if (res.ok && form.dataset.show) {
                return res.json().then(function (j) { form.elements.shown.value = j[form.dataset.show]; });
              }
              if (res.ok) { if (form.dataset.then) location.href = form.dataset.then; else location.reload(); return; }
              return res.json().then(function (j) { show(j && j.error ? j.error.message : res.statusText); },
                                     function () { show(res.status + " " + res.statusText); });
            }, function (err) { show("the node did not answer: " + err); })
              .finally(function () { buttons.forEach(function (b) { b.disabled = false; }); });
          });
          // A CSV upload: the node answers a line of JSON per step (reading,
          // then writing N of M rows), then the result or the error.
          function upload(form) {
            var file = form.elements.file.files[0];
            if (!file) return;
            var bar = form.querySelector("progress"), shown = form.elements.shown;
            bar.hidden = false; bar.value = 0; shown.value = "uploading…";
            fetch(form.dataset.api, {
              method: "POST", credentials: "same-origin", body: file,
              headers: { "Content-Type": "text/csv", "X-CSRF-Token": csrf }
            }).then(function (res) {
              if (!res.ok) {
                return res.json().then(function (j) { show(j && j.error ? j.error.message : res.statusText); });
              }
              var reader = res.body.getReader(), decoder = new TextDecoder(), rest = "";
              function step(e) {
                if (e.progress) {
                  var p = e.progress;
                  if (p.written != null) { bar.value = p.rows ? p.written / p.rows : 0; shown.value = "writing " + p.written + " of " + p.rows + " rows"; }
                  else { bar.value = p.totalBytes ? 0.5 * p.bytes / p.totalBytes : 0; shown.value = "reading: " + p.rows + " rows"; }
                } else if (e.result) {
                  bar.value = 1; shown.value = "imported: " + e.result.rowsChanged + " rows changed of " + e.result.rowsRead + " read";
                } else if (e.error) { bar.hidden = true; shown.value = ""; show(e.error.message); }
              }
              function pump() {
                return reader.read().then(function (r) {
                  rest += decoder.decode(r.value || new Uint8Array(), { stream: !r.done });
                  var lines = rest.split("\\n"); rest = lines.pop();
                  lines.filter(Boolean).forEach(function (l) { step(JSON.parse(l)); });
                  if (!r.done) return pump();
                });
              }
              return pump();
            }, function (err) { show("the node did not answer: " + err); });
          }
          document.documentElement.setAttribute("data-ready", "1");
          // Live peers: the server sends the peers' state as it changes.
          var live = document.getElementById("peers-live");
          if (live && window.EventSource) {
            var source = new EventSource("/peers/events");
            source.onmessage = function (m) { live.innerHTML = m.data; };
          }
        })();
        """
}
