package main

import (
	"cmp"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"github.com/operator-framework/api/pkg/operators/v1alpha1"
)

// apiPackage is what the generator reads of an API package's source: its
// named types, their doc comments and their CSV markers.
type apiPackage struct {
	types map[string]*goType
}

type goType struct {
	name    string
	pos     token.Position
	doc     string
	markers []typeMarker
	expr    ast.Expr // the type's definition
	fields  []*goField
}

type goField struct {
	name     string // Go name
	jsonName string // "" for an inlined field
	pos      token.Position
	doc      string
	expr     ast.Expr
	markers  []fieldMarker
	used     []bool // markers[i] made a descriptor
}

// loadAPI parses the non-test Go files of dirs.
func loadAPI(dirs ...string) (*apiPackage, error) {
	pkg := &apiPackage{types: map[string]*goType{}}
	fset := token.NewFileSet()
	for _, dir := range dirs {
		files, err := filepath.Glob(filepath.Join(dir, "*.go"))
		if err != nil {
			return nil, err
		}
		slices.Sort(files)
		for _, name := range files {
			if strings.HasSuffix(name, "_test.go") {
				continue
			}
			src, err := os.ReadFile(name)
			if err != nil {
				return nil, err
			}
			f, err := parser.ParseFile(fset, name, src, parser.ParseComments)
			if err != nil {
				return nil, err
			}
			if err := pkg.addFile(fset, f); err != nil {
				return nil, err
			}
		}
	}
	return pkg, nil
}

func (p *apiPackage) addFile(fset *token.FileSet, f *ast.File) error {
	for _, decl := range f.Decls {
		gd, ok := decl.(*ast.GenDecl)
		if !ok || gd.Tok != token.TYPE {
			continue
		}
		for _, spec := range gd.Specs {
			ts := spec.(*ast.TypeSpec)
			docGroup := ts.Doc
			if docGroup == nil && len(gd.Specs) == 1 {
				docGroup = gd.Doc
			}
			t := &goType{name: ts.Name.Name, pos: fset.Position(ts.Pos()), expr: ts.Type}
			var err error
			var markers []string
			t.doc, markers = splitDoc(docGroup)
			for _, m := range markers {
				tm, perr := parseTypeMarker(m)
				if perr != nil {
					err = errors.Join(err, fmt.Errorf("%s: type %s: %w", t.pos, t.name, perr))
					continue
				}
				t.markers = append(t.markers, tm)
			}
			if st, ok := ts.Type.(*ast.StructType); ok {
				for _, fl := range st.Fields.List {
					fields, ferr := fieldsOf(fset, fl)
					err = errors.Join(err, ferr)
					t.fields = append(t.fields, fields...)
				}
			}
			if err != nil {
				return err
			}
			if _, dup := p.types[t.name]; dup {
				return fmt.Errorf("%s: type %s is defined twice", t.pos, t.name)
			}
			p.types[t.name] = t
		}
	}
	return nil
}

// fieldsOf reads one line of a struct: its fields' JSON names, docs and
// descriptor markers.
func fieldsOf(fset *token.FileSet, fl *ast.Field) ([]*goField, error) {
	doc, markers := splitDoc(fl.Doc)
	jsonName, inline := "", false
	if fl.Tag != nil {
		tag, err := strconv.Unquote(fl.Tag.Value)
		if err != nil {
			return nil, err
		}
		name, opts, _ := strings.Cut(reflect.StructTag(tag).Get("json"), ",")
		jsonName = name
		inline = slices.Contains(strings.Split(opts, ","), "inline")
	}
	var names []string
	for _, n := range fl.Names {
		names = append(names, n.Name)
	}
	if len(names) == 0 { // embedded: inlined by encoding/json unless tagged
		inline = inline || jsonName == ""
		names = []string{embeddedName(fl.Type)}
	}
	var out []*goField
	var err error
	for _, n := range names {
		f := &goField{name: n, pos: fset.Position(fl.Pos()), doc: doc, expr: fl.Type}
		switch {
		case inline:
			f.jsonName = ""
		case jsonName == "-" || !ast.IsExported(n):
			continue // encoding/json leaves it out
		case jsonName == "":
			f.jsonName = n
		default:
			f.jsonName = jsonName
		}
		for _, m := range markers {
			fm, perr := parseFieldMarker(m)
			if perr != nil {
				err = errors.Join(err, fmt.Errorf("%s: field %s: %w", f.pos, n, perr))
				continue
			}
			f.markers = append(f.markers, fm)
		}
		f.used = make([]bool, len(f.markers))
		out = append(out, f)
	}
	return out, err
}

// embeddedName is the field name of an embedded type: T for T, *T and pkg.T.
func embeddedName(expr ast.Expr) string {
	switch e := expr.(type) {
	case *ast.StarExpr:
		return embeddedName(e.X)
	case *ast.SelectorExpr:
		return e.Sel.Name
	case *ast.Ident:
		return e.Name
	}
	return ""
}

// splitDoc returns a comment's text without its marker lines, as
// controller-gen writes it into the CRD, and the arguments of its CSV markers.
func splitDoc(cg *ast.CommentGroup) (string, []string) {
	if cg == nil {
		return "", nil
	}
	var text, markers []string
	for _, line := range strings.Split(cg.Text(), "\n") {
		trimmed := strings.TrimSpace(line)
		if rest, ok := strings.CutPrefix(trimmed, csvMarkerPrefix); ok {
			markers = append(markers, rest)
			continue
		}
		if strings.HasPrefix(trimmed, "+") {
			continue
		}
		text = append(text, line)
	}
	return strings.TrimSpace(strings.Join(text, "\n")), markers
}

// crdDescription is the owned-CRD entry of kind, from the type of that name:
// its doc and kind-level marker, and a descriptor for each field marker
// under its spec and status.
func (p *apiPackage) crdDescription(kind, crdName, version string) (v1alpha1.CRDDescription, int, error) {
	t, ok := p.types[kind]
	if !ok {
		return v1alpha1.CRDDescription{}, 0, fmt.Errorf("CRD %s: no Go type %s in the API source", crdName, kind)
	}
	d := v1alpha1.CRDDescription{
		Name:        crdName,
		Version:     version,
		Kind:        kind,
		DisplayName: displayNameOf(kind),
		Description: t.doc,
	}
	order := math.MaxInt
	for _, m := range t.markers {
		if m.displayName != "" {
			d.DisplayName = m.displayName
		}
		if m.order != nil {
			order = *m.order
		}
		for _, r := range m.resources {
			ref := v1alpha1.APIResourceReference{Kind: r[0], Version: r[1]}
			if len(r) == 3 {
				ref.Name = r[2]
			}
			d.Resources = append(d.Resources, ref)
		}
	}
	slices.SortStableFunc(d.Resources, func(a, b v1alpha1.APIResourceReference) int {
		return cmp.Or(cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.Name, b.Name), cmp.Compare(a.Version, b.Version))
	})

	for _, root := range []string{"spec", "status"} {
		var ds []descriptor
		for _, f := range t.fields {
			if f.jsonName == root {
				if err := p.walk(f.expr, root, "", map[string]bool{kind: true}, &ds); err != nil {
					return v1alpha1.CRDDescription{}, 0, fmt.Errorf("%s %s: %w", kind, root, err)
				}
			}
		}
		slices.SortStableFunc(ds, func(a, b descriptor) int {
			return cmp.Or(cmp.Compare(a.order, b.order), cmp.Compare(a.path, b.path))
		})
		for _, x := range ds {
			if root == "spec" {
				d.SpecDescriptors = append(d.SpecDescriptors, v1alpha1.SpecDescriptor{
					Path: x.path, DisplayName: x.displayName, Description: x.description, XDescriptors: x.xDescriptors})
			} else {
				d.StatusDescriptors = append(d.StatusDescriptors, v1alpha1.StatusDescriptor{
					Path: x.path, DisplayName: x.displayName, Description: x.description, XDescriptors: x.xDescriptors})
			}
		}
	}
	return d, order, nil
}

type descriptor struct {
	path, displayName, description string
	xDescriptors                   []string
	order                          int
}

// walk adds a descriptor for each field marker of descType (spec or status)
// in the type expr, whose fields' paths start with prefix. It follows
// pointers, slices (an element's fields are under name[0], as operator-sdk
// writes them) and the package's own struct types; visiting guards
// against recursive types.
func (p *apiPackage) walk(expr ast.Expr, descType, prefix string, visiting map[string]bool, out *[]descriptor) error {
	t, isSlice := p.structOf(expr)
	if t == nil {
		return nil
	}
	if isSlice && prefix != "" {
		prefix = strings.TrimSuffix(prefix, ".") + "[0]."
	}
	if visiting[t.name] {
		return nil
	}
	visiting[t.name] = true
	defer delete(visiting, t.name)
	for _, f := range t.fields {
		path := prefix + f.jsonName
		if f.jsonName == "" { // inlined
			if err := p.walk(f.expr, descType, prefix, visiting, out); err != nil {
				return err
			}
			continue
		}
		var d *descriptor
		for i, m := range f.markers {
			if m.descType != descType {
				continue
			}
			f.used[i] = true
			if d == nil {
				d = &descriptor{path: path, displayName: displayNameOf(f.name), description: f.doc, order: math.MaxInt}
			}
			if m.displayName != "" {
				d.displayName = m.displayName
			}
			if m.order != nil {
				d.order = *m.order
			}
			d.xDescriptors = append(d.xDescriptors, m.xDescriptors...)
		}
		if d != nil {
			*out = append(*out, *d)
		}
		if err := p.walk(f.expr, descType, path+".", visiting, out); err != nil {
			return err
		}
	}
	return nil
}

// structOf resolves expr to one of the package's struct types, through
// pointers and slices; nil for other packages' types and non-structs.
func (p *apiPackage) structOf(expr ast.Expr) (*goType, bool) {
	isSlice := false
	for {
		switch e := expr.(type) {
		case *ast.StarExpr:
			expr = e.X
		case *ast.ArrayType:
			isSlice = true
			expr = e.Elt
		case *ast.Ident:
			t, ok := p.types[e.Name]
			if !ok {
				return nil, false
			}
			if _, isStruct := t.expr.(*ast.StructType); !isStruct {
				// A named non-struct type such as `type Ports []Port`.
				expr = t.expr
				continue
			}
			return t, isSlice
		default:
			return nil, false
		}
	}
}

// unusedMarkers reports descriptor markers that made no descriptor: on a
// field that no owned kind's spec or status reaches, or with the wrong type.
func (p *apiPackage) unusedMarkers() error {
	var err error
	names := make([]string, 0, len(p.types))
	for n := range p.types {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		for _, f := range p.types[n].fields {
			for i, m := range f.markers {
				if !f.used[i] {
					err = errors.Join(err, fmt.Errorf("%s: %s.%s has a type=%s descriptor marker, but no owned kind's %s reaches it", f.pos, n, f.name, m.descType, m.descType))
				}
			}
		}
	}
	return err
}
