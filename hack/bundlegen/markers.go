package main

import (
	"fmt"
	"strconv"
	"strings"
	"unicode"
)

// csvMarkerPrefix starts operator-sdk's CSV markers: on a kind's type
//
//	+operator-sdk:csv:customresourcedefinitions:displayName="Mesh",resources={{Deployment,v1,trellis-controlplane}},order=1
//
// and on a field of its spec or status, or of a struct type below them
//
//	+operator-sdk:csv:customresourcedefinitions:type=spec,displayName="Replicas",xDescriptors={"urn:alm:descriptor:com.tectonic.ui:podCount"}
//
// controller-gen does not know them and leaves them alone.
const csvMarkerPrefix = "+operator-sdk:csv:customresourcedefinitions:"

// markerValue is one argument's value: a string (quoted, raw or bare) or a
// {list} of values.
type markerValue struct {
	str    string
	list   []markerValue
	isList bool
}

// strings returns v as a list of strings: a list's items, or v itself.
func (v markerValue) strings() ([]string, error) {
	if !v.isList {
		return []string{v.str}, nil
	}
	out := make([]string, 0, len(v.list))
	for _, item := range v.list {
		if item.isList {
			return nil, fmt.Errorf("expected a list of strings, got a nested list")
		}
		out = append(out, item.str)
	}
	return out, nil
}

// parseMarkerArgs parses `key=value,key=value`, where a value is "quoted",
// `raw`, bare (up to the next comma or brace) or a {list} of values.
func parseMarkerArgs(s string) (map[string]markerValue, error) {
	p := &markerParser{in: s}
	args := map[string]markerValue{}
	for {
		p.skipSpace()
		if p.done() && len(args) == 0 {
			break
		}
		key := p.readWhile(func(r byte) bool {
			return r == '_' || r == '-' || unicode.IsLetter(rune(r)) || unicode.IsDigit(rune(r))
		})
		if key == "" {
			return nil, p.errorf("expected an argument name")
		}
		p.skipSpace()
		if !p.accept('=') {
			return nil, p.errorf("expected = after %s", key)
		}
		v, err := p.value()
		if err != nil {
			return nil, err
		}
		if _, dup := args[key]; dup {
			return nil, p.errorf("%s is given twice", key)
		}
		args[key] = v
		p.skipSpace()
		if p.done() {
			break
		}
		if !p.accept(',') {
			return nil, p.errorf("expected , after the value of %s", key)
		}
	}
	return args, nil
}

type markerParser struct {
	in  string
	pos int
}

func (p *markerParser) done() bool { return p.pos >= len(p.in) }

func (p *markerParser) peek() byte {
	if p.done() {
		return 0
	}
	return p.in[p.pos]
}

func (p *markerParser) accept(c byte) bool {
	if p.peek() == c && !p.done() {
		p.pos++
		return true
	}
	return false
}

func (p *markerParser) skipSpace() {
	for !p.done() && (p.in[p.pos] == ' ' || p.in[p.pos] == '\t') {
		p.pos++
	}
}

func (p *markerParser) readWhile(ok func(byte) bool) string {
	start := p.pos
	for !p.done() && ok(p.in[p.pos]) {
		p.pos++
	}
	return p.in[start:p.pos]
}

func (p *markerParser) errorf(format string, a ...any) error {
	return fmt.Errorf("at %d of %q: %s", p.pos, p.in, fmt.Sprintf(format, a...))
}

func (p *markerParser) value() (markerValue, error) {
	p.skipSpace()
	switch p.peek() {
	case '{':
		p.pos++
		v := markerValue{isList: true}
		for {
			p.skipSpace()
			if p.accept('}') {
				return v, nil
			}
			item, err := p.value()
			if err != nil {
				return markerValue{}, err
			}
			v.list = append(v.list, item)
			p.skipSpace()
			if p.accept('}') {
				return v, nil
			}
			if !p.accept(',') {
				return markerValue{}, p.errorf("expected , or } in a list")
			}
		}
	case '"':
		start := p.pos
		p.pos++
		for !p.done() && p.in[p.pos] != '"' {
			if p.in[p.pos] == '\\' {
				p.pos++
			}
			p.pos++
		}
		if p.done() {
			return markerValue{}, p.errorf("unterminated string")
		}
		p.pos++
		s, err := strconv.Unquote(p.in[start:p.pos])
		if err != nil {
			return markerValue{}, p.errorf("bad string: %v", err)
		}
		return markerValue{str: s}, nil
	case '`':
		p.pos++
		end := strings.IndexByte(p.in[p.pos:], '`')
		if end < 0 {
			return markerValue{}, p.errorf("unterminated raw string")
		}
		s := p.in[p.pos : p.pos+end]
		p.pos += end + 1
		return markerValue{str: s}, nil
	default:
		s := strings.TrimSpace(p.readWhile(func(r byte) bool { return r != ',' && r != '{' && r != '}' }))
		if s == "" {
			return markerValue{}, p.errorf("expected a value")
		}
		return markerValue{str: s}, nil
	}
}

// typeMarker is a kind-level marker: the CRD description's display name,
// the kinds of what the operator makes or uses for an object of the kind,
// and its place among the owned CRDs.
type typeMarker struct {
	displayName string
	resources   [][]string // kind, version and optionally name
	order       *int
}

// fieldMarker is a field-level marker: a spec or status descriptor.
type fieldMarker struct {
	descType     string // spec or status
	displayName  string
	xDescriptors []string
	order        *int
}

func parseTypeMarker(s string) (typeMarker, error) {
	args, err := parseMarkerArgs(s)
	if err != nil {
		return typeMarker{}, err
	}
	var m typeMarker
	for k, v := range args {
		switch k {
		case "displayName":
			m.displayName = v.str
		case "order":
			n, err := strconv.Atoi(v.str)
			if err != nil {
				return typeMarker{}, fmt.Errorf("order %q is not a number", v.str)
			}
			m.order = &n
		case "resources":
			if !v.isList {
				return typeMarker{}, fmt.Errorf("resources must be a list: {{Kind,version,name},...}")
			}
			for _, r := range v.list {
				parts, err := r.strings()
				if err != nil || !r.isList || len(parts) < 2 || len(parts) > 3 {
					return typeMarker{}, fmt.Errorf("each resource is {Kind,version} or {Kind,version,name}")
				}
				m.resources = append(m.resources, parts)
			}
		case "type", "xDescriptors":
			return typeMarker{}, fmt.Errorf("%s belongs on a field's marker, not a type's", k)
		default:
			return typeMarker{}, fmt.Errorf("unknown argument %s (want displayName, resources or order)", k)
		}
	}
	return m, nil
}

func parseFieldMarker(s string) (fieldMarker, error) {
	args, err := parseMarkerArgs(s)
	if err != nil {
		return fieldMarker{}, err
	}
	var m fieldMarker
	for k, v := range args {
		switch k {
		case "type":
			m.descType = v.str
		case "displayName":
			m.displayName = v.str
		case "xDescriptors":
			if m.xDescriptors, err = v.strings(); err != nil {
				return fieldMarker{}, fmt.Errorf("xDescriptors: %w", err)
			}
		case "order":
			n, err := strconv.Atoi(v.str)
			if err != nil {
				return fieldMarker{}, fmt.Errorf("order %q is not a number", v.str)
			}
			m.order = &n
		case "resources":
			return fieldMarker{}, fmt.Errorf("resources belongs on the kind's type, not a field")
		default:
			return fieldMarker{}, fmt.Errorf("unknown argument %s (want type, displayName, xDescriptors or order)", k)
		}
	}
	if m.descType != "spec" && m.descType != "status" {
		return fieldMarker{}, fmt.Errorf("type must be spec or status, not %q", m.descType)
	}
	return m, nil
}

// displayNameOf makes a display name of a Go name, as operator-sdk does
// when a marker names none: TrustDomain is "Trust Domain", CA stays "CA",
// ExcludeOutboundCIDRs is "Exclude Outbound CIDRs".
func displayNameOf(goName string) string {
	r := []rune(goName)
	var words []string
	start := 0
	for i := 1; i < len(r); i++ {
		lowerToUpper := unicode.IsLower(r[i-1]) && unicode.IsUpper(r[i])
		acronymEnd := unicode.IsUpper(r[i-1]) && unicode.IsUpper(r[i]) && i+1 < len(r) && unicode.IsLower(r[i+1]) && !pluralOfAcronym(r, i+1)
		if lowerToUpper || acronymEnd {
			words = append(words, string(r[start:i]))
			start = i
		}
	}
	words = append(words, string(r[start:]))
	return strings.Join(words, " ")
}

// pluralOfAcronym says whether r[i] is the s of a plural acronym (CIDRs):
// an s after two capitals, at the end of the name or before a capital.
func pluralOfAcronym(r []rune, i int) bool {
	return r[i] == 's' && i >= 2 && unicode.IsUpper(r[i-1]) && unicode.IsUpper(r[i-2]) &&
		(i+1 == len(r) || unicode.IsUpper(r[i+1]))
}
