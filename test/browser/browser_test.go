package browser_test

import (
	"bytes"
	"image/png"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/trellis-mesh/trellis/test/browser"
)

func TestChromiumPathFromEnv(t *testing.T) {
	t.Setenv(browser.EnvChromium, filepath.Join(t.TempDir(), "no-such-chromium"))
	_, err := browser.ChromiumPath()
	if err == nil || !strings.Contains(err.Error(), browser.EnvChromium) {
		t.Fatalf("ChromiumPath with %s naming a missing file: %v; want an error that names the variable", browser.EnvChromium, err)
	}
}

// TestBrowser loads a page that changes after a while, waits for the
// change, reads the page, and takes a screenshot of the size of the page.
func TestBrowser(t *testing.T) {
	b := browser.Launch(t)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		_, _ = io.WriteString(w, `<!doctype html><body style="margin:0"><div id="x" style="height:1500px">waiting</div>
<script>setTimeout(() => { document.getElementById('x').textContent = 'done'; console.error('on purpose'); }, 300)</script></body>`)
	}))
	t.Cleanup(srv.Close)
	if err := b.Open(srv.URL); err != nil {
		t.Fatal(err)
	}
	if err := b.WaitFor(`document.getElementById('x').textContent === 'done'`, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := b.WaitFor(`false`, 200*time.Millisecond); err == nil {
		t.Error("WaitFor(false) returned without an error")
	}
	if got, err := browser.Eval[string](b, `document.getElementById('x').textContent`); err != nil || got != "done" {
		t.Errorf("Eval: %q, %v; want done", got, err)
	}
	if errs := b.JSErrors(); len(errs) != 1 || !strings.Contains(errs[0], "on purpose") {
		t.Errorf("JSErrors: %q; want the page's one console.error", errs)
	}

	dir := t.TempDir()
	t.Setenv(browser.EnvScreenshots, dir)
	path, err := b.Screenshot("a/page")
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(dir, "a-page.png"); path != want {
		t.Errorf("screenshot at %s, want %s", path, want)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("the screenshot is not a PNG: %v", err)
	}
	if r := img.Bounds(); r.Dx() != browser.Viewport.Width || r.Dy() < 1500 {
		t.Errorf("screenshot is %dx%d; want the window's width (%d) and the whole page's height (1500 or more)", r.Dx(), r.Dy(), browser.Viewport.Width)
	}
}
