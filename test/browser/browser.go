package browser

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"

	"github.com/trellis-mesh/trellis/test/testenv"
)

// Environment variables that change how tests find and use the browser.
const (
	// EnvRequire, when not empty, makes a missing chromium fail the test
	// instead of skipping it.
	EnvRequire = "TRELLIS_REQUIRE_CHROMIUM"
	// EnvChromium names the browser binary; without it chromium (or
	// chromium-browser) is looked up on PATH.
	EnvChromium = "TRELLIS_CHROMIUM"
	// EnvScreenshots is the directory screenshots go to; without it,
	// _output/screenshots at the root of the module.
	EnvScreenshots = "TRELLIS_SCREENSHOTS"
)

// Viewport is the browser window's size: wide enough for a graph of four
// columns without scrolling.
var Viewport = struct{ Width, Height int }{1440, 1000}

// ChromiumPath returns the browser binary tests run.
func ChromiumPath() (string, error) {
	if p := os.Getenv(EnvChromium); p != "" {
		if _, err := exec.LookPath(p); err != nil {
			return "", fmt.Errorf("%s=%s: %w", EnvChromium, p, err)
		}
		return p, nil
	}
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	return "", errors.New("chromium is not on PATH: run hack/install-chromium.sh (as root it installs Debian's chromium), or set " + EnvChromium)
}

// Browser is one headless Chromium process with one tab, closed when the
// test ends.
type Browser struct {
	t   testing.TB
	ctx context.Context

	mu       sync.Mutex
	jsErrors []string
}

// Launch starts headless Chromium for t. Without chromium it skips t, or
// fails it when EnvRequire is set.
func Launch(t testing.TB) *Browser {
	t.Helper()
	path, err := ChromiumPath()
	if err != nil {
		if os.Getenv(EnvRequire) != "" {
			t.Fatalf("%v (%s is set, so the browser tests may not be skipped)", err, EnvRequire)
		}
		t.Skip(err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(path),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(Viewport.Width, Viewport.Height),
		// Tests run as root in containers, where Chromium's sandbox
		// cannot start; the pages it opens are the test's own.
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("safebrowsing-disable-auto-update", true),
		chromedp.Flag("lang", "en-US"),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	b := &Browser{t: t}
	ctx, cancel := chromedp.NewContext(allocCtx, chromedp.WithListener(b.listen))
	t.Cleanup(func() {
		cancel()
		cancelAlloc()
	})
	// The first Run starts the browser; it must not carry a timeout,
	// which would end the browser with it.
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("starting %s: %v", path, err)
	}
	b.ctx = ctx
	return b
}

// listen keeps the page's uncaught exceptions and console errors, which a
// test reports with its failure (JSErrors).
func (b *Browser) listen(ev any) {
	var msg string
	switch ev := ev.(type) {
	case *runtime.EventExceptionThrown:
		d := ev.ExceptionDetails
		msg = d.Text
		if d.Exception != nil && d.Exception.Description != "" {
			msg = d.Exception.Description
		}
		msg = fmt.Sprintf("uncaught: %s (%s:%d)", msg, d.URL, d.LineNumber+1)
	case *runtime.EventConsoleAPICalled:
		if ev.Type != runtime.ConsoleAPICalledTypeError {
			return
		}
		var parts []string
		for _, a := range ev.Args {
			if a.Description != "" {
				parts = append(parts, a.Description)
			} else {
				parts = append(parts, strings.Trim(string(a.Value), `"`))
			}
		}
		msg = "console.error: " + strings.Join(parts, " ")
	default:
		return
	}
	b.mu.Lock()
	b.jsErrors = append(b.jsErrors, msg)
	b.mu.Unlock()
}

// JSErrors returns the uncaught exceptions and console errors of the
// pages opened so far.
func (b *Browser) JSErrors() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]string(nil), b.jsErrors...)
}

// Context is the tab's chromedp context, for actions this package does
// not wrap. Derive timeouts from it; never cancel it.
func (b *Browser) Context() context.Context { return b.ctx }

// Open loads url in the tab and waits for its load event.
func (b *Browser) Open(url string) error {
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, chromedp.Navigate(url)); err != nil {
		return fmt.Errorf("opening %s: %w", url, err)
	}
	return nil
}

// WaitFor waits until the JavaScript expression is truthy in the page, for
// at most timeout.
func (b *Browser) WaitFor(expr string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(b.ctx, timeout+5*time.Second)
	defer cancel()
	_, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](expr,
		chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(timeout)))
	if err != nil {
		return fmt.Errorf("waiting %s for %s: %w%s", timeout, expr, err, b.errorsSuffix())
	}
	return nil
}

func (b *Browser) errorsSuffix() string {
	if errs := b.JSErrors(); len(errs) > 0 {
		return "; the page's errors: " + strings.Join(errs, "; ")
	}
	return ""
}

// Eval evaluates a JavaScript expression in b's page and decodes its value
// (as JSON) into a T.
func Eval[T any](b *Browser, expr string) (T, error) {
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		return v, fmt.Errorf("evaluating %s: %w%s", expr, err, b.errorsSuffix())
	}
	return v, nil
}

var unsafeName = regexp.MustCompile(`[^A-Za-z0-9._-]+`)

// ScreenshotDir is where screenshots go: EnvScreenshots, or
// _output/screenshots at the repository's root. It is created.
func ScreenshotDir() (string, error) {
	dir := os.Getenv(EnvScreenshots)
	if dir == "" {
		dir = filepath.Join(testenv.RepoRoot(), "_output", "screenshots")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	return dir, nil
}

// Screenshot saves the whole page (beyond the window, as far as it
// scrolls) as <ScreenshotDir>/<name>.png and returns the file's path. name
// should say what the picture shows (dashboard-edge-failing); characters
// other than letters, digits, '.', '_' and '-' become '-'.
func (b *Browser) Screenshot(name string) (string, error) {
	dir, err := ScreenshotDir()
	if err != nil {
		return "", fmt.Errorf("screenshot %s: %w", name, err)
	}
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		return "", fmt.Errorf("screenshot %s: %w", name, err)
	}
	path := filepath.Join(dir, unsafeName.ReplaceAllString(name, "-")+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		return "", fmt.Errorf("screenshot %s: %w", name, err)
	}
	return path, nil
}
