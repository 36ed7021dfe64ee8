package main

import (
	"fmt"
	"io"
	"reflect"
	"slices"
	"strings"

	"github.com/operator-framework/api/pkg/operators/v1alpha1"
	apierrors "github.com/operator-framework/api/pkg/validation/errors"
)

// Level is how bad a finding is. The bundle is to have neither.
type Level string

const (
	LevelError   Level = "ERROR"
	LevelWarning Level = "WARNING"
)

// Finding is one problem of the bundle.
type Finding struct {
	Level Level
	// Object is what the problem is in: "ClusterServiceVersion trellis.v0.1.0",
	// "ClusterRole x", "metadata/annotations.yaml".
	Object string
	// Field is where in Object, when known: "spec.installModes".
	Field   string
	Message string
	// Fix says what to change, when the library does not already say it.
	Fix string
	// Validators are the validators that found it (two may find the same
	// removed API).
	Validators []string
}

func (f Finding) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-7s %s: ", f.Level, f.Object)
	msg := strings.Join(strings.Fields(f.Message), " ")
	if f.Field != "" && !strings.HasPrefix(msg, f.Field) {
		b.WriteString(f.Field + ": ")
	}
	b.WriteString(msg)
	if f.Fix != "" {
		b.WriteString("; " + f.Fix)
	}
	fmt.Fprintf(&b, " [%s]", strings.Join(f.Validators, ", "))
	return b.String()
}

// Report is what a run found.
type Report struct {
	Dir        string
	K8sVersion string
	// Validators are the names of the validators run, in order.
	Validators []string
	Findings   []Finding
}

// add records f as found by validator, once: a finding already there gets the
// validator's name added instead.
func (r *Report) add(f Finding, validator string) {
	for i, g := range r.Findings {
		if g.Level == f.Level && g.Object == f.Object && g.Field == f.Field && g.Message == f.Message {
			if !slices.Contains(g.Validators, validator) {
				r.Findings[i].Validators = append(r.Findings[i].Validators, validator)
			}
			return
		}
	}
	f.Validators = []string{validator}
	r.Findings = append(r.Findings, f)
}

func (r *Report) count(l Level) int {
	n := 0
	for _, f := range r.Findings {
		if f.Level == l {
			n++
		}
	}
	return n
}

// Errors is the number of errors.
func (r *Report) Errors() int { return r.count(LevelError) }

// Warnings is the number of warnings.
func (r *Report) Warnings() int { return r.count(LevelWarning) }

// Write prints the findings grouped by object (in the order the validators
// met them, errors first in each group) and a summary line.
func (r *Report) Write(w io.Writer) error {
	var objects []string
	byObject := map[string][]Finding{}
	for _, f := range r.Findings {
		if _, ok := byObject[f.Object]; !ok {
			objects = append(objects, f.Object)
		}
		byObject[f.Object] = append(byObject[f.Object], f)
	}
	var b strings.Builder
	for _, o := range objects {
		fs := byObject[o]
		slices.SortStableFunc(fs, func(x, y Finding) int {
			if x.Level != y.Level {
				return strings.Compare(string(x.Level), string(y.Level)) // ERROR < WARNING
			}
			return strings.Compare(x.String(), y.String())
		})
		for _, f := range fs {
			b.WriteString(f.String() + "\n")
		}
		b.WriteString("\n")
	}
	verdict := "valid"
	if r.Errors() > 0 || r.Warnings() > 0 {
		verdict = "INVALID"
	}
	fmt.Fprintf(&b, "%s: %s: %s, %s (validators: %s; k8s-version %s)\n", r.Dir, verdict,
		plural(r.Errors(), "error"), plural(r.Warnings(), "warning"), strings.Join(r.Validators, ", "), r.K8sVersion)
	_, err := io.WriteString(w, b.String())
	return err
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}

// fromLibrary turns one of the library's errors or warnings about object
// into a Finding that names the field and the fix where the library does not.
func fromLibrary(object string, e apierrors.Error) Finding {
	f := Finding{Level: LevelError, Object: object, Field: e.Field, Message: e.Detail}
	// The library starts its CSV messages with "(<CSV name>) ", which the
	// object already says.
	if rest, ok := strings.CutPrefix(f.Message, "("); ok {
		if name, msg, ok := strings.Cut(rest, ") "); ok && strings.HasSuffix(object, " "+name) {
			f.Message = msg
		}
	}
	if e.Level == apierrors.LevelWarn {
		f.Level = LevelWarning
	}
	if e.Type == apierrors.ErrorFieldMissing {
		// Field is a Go path in the CSV type ("Spec.DisplayName"); the value
		// is only the word "field" or "struct".
		f.Field = csvFieldPath(e.Field)
	} else if e.BadValue != nil {
		v := fmt.Sprint(e.BadValue)
		if v != "" && !strings.Contains(object, v) && !strings.Contains(f.Message, v) {
			f.Message += " (" + v + ")"
		}
	}
	for _, h := range hints {
		if strings.Contains(f.Message, h.match) {
			if f.Field == "" {
				f.Field = h.field
			}
			f.Fix = h.fix
			break
		}
	}
	return f
}

// hints name the field and the fix for the library's messages that say
// neither; the first that matches applies.
var hints = []struct{ match, field, fix string }{
	{"install modes not found", "spec.installModes",
		"list the install modes OwnNamespace, SingleNamespace, MultiNamespace and AllNamespaces, each with supported: true or false"},
	{"none of InstallModeTypes are supported", "spec.installModes", "mark at least one install mode supported: true"},
	{"example annotations not found", "metadata.annotations.alm-examples",
		"add alm-examples: a JSON list with an example object of each owned CRD's kind"},
	{"annotations not found", "metadata.annotations",
		"add alm-examples (a JSON list with an example of each owned CRD's kind), capabilities and categories"},
	{"provided API should have an example annotation", "metadata.annotations.alm-examples", "add an example of this kind to alm-examples"},
	{"example must have a provided API", "metadata.annotations.alm-examples",
		"remove the example, or own its CRD in spec.customresourcedefinitions.owned"},
	{"csv.Spec.Icon not specified", "spec.icon",
		"add one icon with base64data and mediatype (image/svg+xml, image/png, image/jpeg or image/gif)"},
	{"csv.Spec.Provider.Name not specified", "spec.provider.name", "name the operator's publisher"},
	{"is not a valid capabilities level", "metadata.annotations.capabilities",
		"use one of Basic Install, Seamless Upgrades, Full Lifecycle, Deep Insights, Auto Pilot"},
	{"is not in the set of standard categories", "metadata.annotations.categories",
		"use standard categories, comma-separated (e.g. Networking, Security)"},
	{"has an empty description", "spec.customresourcedefinitions.owned[].description", "describe the kind in a sentence"},
	{"are not following the recommended naming convention: https://olm", channelsAnnotation + " in " + annotationsPath,
		"name channels stable, fast or candidate, optionally with a suffix (stable-v1)"},
	{"not found in bundle", "spec.customresourcedefinitions.owned", "add the CRD's manifest to manifests/, or stop owning it"},
	{"but not defined in CSV", "spec.customresourcedefinitions.owned", "own the CRD in the CSV, or remove its manifest"},
	{"required field missing", "", "set it"},
}

// csvFieldPath turns a Go field path of the CSV type ("Spec.DisplayName")
// into the YAML path a user edits ("spec.displayName").
func csvFieldPath(goPath string) string {
	t := reflect.TypeFor[v1alpha1.ClusterServiceVersion]()
	var out []string
	for _, name := range strings.Split(goPath, ".") {
		for t != nil && (t.Kind() == reflect.Pointer || t.Kind() == reflect.Slice) {
			t = t.Elem()
		}
		sf, ok := reflect.StructField{}, false
		if t != nil && t.Kind() == reflect.Struct {
			sf, ok = t.FieldByName(name)
		}
		if !ok {
			out = append(out, name)
			t = nil
			continue
		}
		out = append(out, strings.Split(sf.Tag.Get("json"), ",")[0])
		t = sf.Type
	}
	return strings.Join(out, ".")
}
