package formspec

import (
	"bytes"
	"encoding/xml"

	"fmt"
	"io"
	"math"
	"regexp"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/haven-org/haven"
)

// Limits bound what a submission's XML may cost to parse.
type Limits struct {
	MaxBytes    int // size of the XML document
	MaxDepth    int // element nesting
	MaxElements int
}

// DefaultLimits are generous for any real form (a 5,000-question form with
// repeats stays far below them) and small enough to keep a hostile document cheap.
var DefaultLimits = Limits{MaxBytes: 10 << 20, MaxDepth: 64, MaxElements: 200_000}

// Element is an element of a submission instance. Names are local names:
// namespaces are ignored, as ODK Central and Collect match them.
type Element struct {
	Name     string
	Attrs    map[string]string // by local name
	Children []*Element
	Text     string // character data directly inside, trimmed
}

// Instance is a parsed submission.
type Instance struct {
	Root         *Element
	FormID       string
	Version      string
	InstanceID   string
	DeprecatedID string
	InstanceName string
	Encrypted    bool
}

// Child returns e's first child named name, or nil.
func (e *Element) Child(name string) *Element {
	for _, c := range e.Children {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// ParseInstance parses submission XML within limits. It refuses DOCTYPE and
// entity declarations, invalid UTF-8, documents too large or too deep, and
// documents without a form id or instance ID, with errors an enumerator can
// act on.
func ParseInstance(data []byte, lim Limits) (*Instance, error) {
	if lim.MaxBytes > 0 && len(data) > lim.MaxBytes {
		return nil, haven.Errorf(haven.ETOOLARGE, "The form data is %d bytes, more than the %d bytes Haven accepts.", len(data), lim.MaxBytes)
	}
	if !utf8.Valid(data) {
		return nil, invalid("The form data is not valid UTF-8 text. The file on the device is damaged; it cannot be sent as it is.")
	}
	root, ok := fastTree(data, lim)
	if !ok {
		var err error
		if root, err = slowTree(data, lim); err != nil {
			return nil, err
		}
	}
	inst := &Instance{Root: root, FormID: strings.TrimSpace(root.Attrs["id"]), Version: root.Attrs["version"]}
	inst.Encrypted = root.Attrs["encrypted"] == "yes"
	if inst.FormID == "" {
		return nil, invalid("The form data has no form id (the id attribute of its root element <%s>). It was not made from a form of this server.", root.Name)
	}
	if meta := root.Child("meta"); meta != nil {
		if e := meta.Child("instanceID"); e != nil {
			inst.InstanceID = e.Text
		}
		if e := meta.Child("deprecatedID"); e != nil {
			inst.DeprecatedID = e.Text
		}
		if e := meta.Child("instanceName"); e != nil {
			inst.InstanceName = e.Text
		}
	}
	if inst.InstanceID == "" {
		return nil, invalid("The form data has no meta/instanceID, so Haven cannot tell it from other submissions. Use a form that records an instanceID (every XLSForm does).")
	}
	if len(inst.InstanceID) > 200 || strings.ContainsAny(inst.InstanceID, "/\\\x00") {
		return nil, invalid("The instanceID %q cannot be used.", truncate(inst.InstanceID, 60))
	}
	return inst, nil
}

// slowTree builds the element tree with encoding/xml, strictly, and says
// precisely what is wrong with a document it refuses.
func slowTree(data []byte, lim Limits) (*Element, error) {
	dec := xml.NewDecoder(bytes.NewReader(data))
	dec.Strict = true
	dec.Entity = nil
	dec.CharsetReader = func(label string, r io.Reader) (io.Reader, error) {
		if strings.EqualFold(label, "utf-8") || strings.EqualFold(label, "utf8") {
			return r, nil
		}
		return nil, fmt.Errorf("encoding %q is not supported, only UTF-8", label)
	}
	var stack []*Element
	var root *Element
	var text [][]byte
	count := 0
	for {
		tok, err := dec.RawToken()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, invalid("The form data is not well-formed XML (%v). The file on the device is damaged.", err)
		}
		switch t := tok.(type) {
		case xml.StartElement:
			count++
			if lim.MaxElements > 0 && count > lim.MaxElements {
				return nil, haven.Errorf(haven.ETOOLARGE, "The form data has more than %d elements, more than Haven accepts.", lim.MaxElements)
			}
			if lim.MaxDepth > 0 && len(stack) >= lim.MaxDepth {
				return nil, invalid("The form data is nested more than %d levels deep, more than Haven accepts.", lim.MaxDepth)
			}
			if root != nil && len(stack) == 0 {
				return nil, invalid("The form data has more than one root element.")
			}
			e := &Element{Name: t.Name.Local}
			for _, a := range t.Attr {
				if a.Name.Space == "xmlns" || a.Name.Local == "xmlns" {
					continue
				}
				if e.Attrs == nil {
					e.Attrs = map[string]string{}
				}
				e.Attrs[a.Name.Local] = a.Value
			}
			if len(stack) > 0 {
				p := stack[len(stack)-1]
				p.Children = append(p.Children, e)
			} else {
				root = e
			}
			stack = append(stack, e)
			text = append(text, nil)
		case xml.EndElement:
			if len(stack) == 0 {
				return nil, invalid("The form data is not well-formed XML (unexpected end tag).")
			}
			e := stack[len(stack)-1]
			e.Text = string(bytes.TrimSpace(text[len(text)-1]))
			stack, text = stack[:len(stack)-1], text[:len(text)-1]
		case xml.CharData:
			if len(stack) > 0 {
				text[len(text)-1] = append(text[len(text)-1], t...)
			} else if len(bytes.TrimSpace(t)) > 0 {
				return nil, invalid("The form data is not XML: it has text outside a root element. The file on the device is damaged.")
			}
		case xml.Directive:
			return nil, invalid("The form data has a DOCTYPE or ENTITY declaration. Haven does not accept them.")
		}
	}
	if root == nil || len(stack) > 0 {
		return nil, invalid("The form data is empty or cut off. Send the form again.")
	}
	return root, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// Problem is one reason a submission does not fit its form.
type Problem struct {
	Path    string `json:"path"`
	Message string `json:"message"`
}

// MaxProblems caps how many problems Validate reports.
const MaxProblems = 50

// Validation is the result of checking an instance against its form.
type Validation struct {
	Problems []Problem
	// Files lists the attachment names the instance's binary fields name, in
	// document order, without duplicates.
	Files []string
}

// Validate checks an instance against the form: every element must be one
// the form defines (protocol metadata aside), non-repeats appear once, and
// every value fits its type. Empty values are always allowed.
func (f *Form) Validate(inst *Instance) Validation {
	v := &validator{seenFile: map[string]bool{}}
	if inst.Root.Name != f.Root.Name {
		v.add("/"+inst.Root.Name, fmt.Sprintf("the root element is <%s> but form %s has <%s>", inst.Root.Name, f.ID, f.Root.Name))
		return v.Validation
	}
	v.group(f.Root, inst.Root, "/"+inst.Root.Name)
	return v.Validation
}

type validator struct {
	Validation
	seenFile map[string]bool
	more     int
}

func (v *validator) add(path, msg string) {
	if len(v.Problems) >= MaxProblems {
		v.more++
		return
	}
	v.Problems = append(v.Problems, Problem{Path: path, Message: msg})
}

// protocolMeta are elements ODK clients add under meta whether or not the form declares them.
var protocolMeta = map[string]bool{"instanceID": true, "deprecatedID": true}

func (v *validator) group(n *Node, e *Element, at string) {
	counts := map[string]int{}
	for _, c := range e.Children {
		counts[c.Name]++
		p := at + "/" + c.Name
		sn := n.Child(c.Name)
		if sn == nil {
			if n.Name == "meta" && protocolMeta[c.Name] && len(c.Children) == 0 {
				continue
			}
			v.add(p, "is not a field of this form version")
			continue
		}
		if sn.Repeat {
			p = fmt.Sprintf("%s[%d]", p, counts[c.Name])
		} else if counts[c.Name] == 2 {
			v.add(p, "appears more than once but is not a repeat")
			continue
		} else if counts[c.Name] > 2 {
			continue
		}
		if sn.IsGroup() {
			if c.Text != "" && len(c.Children) == 0 {
				v.add(p, "is a group but holds a value")
				continue
			}
			v.group(sn, c, p)
			continue
		}
		if len(c.Children) > 0 {
			v.add(p, "is a question but holds other elements")
			continue
		}
		if c.Text == "" {
			continue
		}
		if msg := checkValue(sn, c.Text); msg != "" {
			v.add(p, msg)
			continue
		}
		if sn.Type == "binary" && !v.seenFile[c.Text] {
			v.seenFile[c.Text] = true
			v.Files = append(v.Files, c.Text)
		}
	}
}

var (
	dateRe     = regexp.MustCompile(`^-?\d{4,}-\d{2}-\d{2}$`)
	timeRe     = regexp.MustCompile(`^\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}(:?\d{2})?)?$`)
	dateTimeRe = regexp.MustCompile(`^-?\d{4,}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}(:?\d{2})?)?$`)
)

// checkValue returns why s does not fit n's type, or "".
func checkValue(n *Node, s string) string {
	switch n.Type {
	case "int", "integer", "long", "short":
		if _, err := strconv.ParseInt(s, 10, 64); err != nil {
			return fmt.Sprintf("%q is not a whole number", truncate(s, 40))
		}
	case "decimal", "double", "float":
		if !finite(s) {
			return fmt.Sprintf("%q is not a number", truncate(s, 40))
		}
	case "date":
		if !dateRe.MatchString(s) || !validDate(s) {
			return fmt.Sprintf("%q is not a date (YYYY-MM-DD)", truncate(s, 40))
		}
	case "time":
		if !timeRe.MatchString(s) {
			return fmt.Sprintf("%q is not a time (HH:MM:SS)", truncate(s, 40))
		}
	case "dateTime":
		if !dateTimeRe.MatchString(s) || !validDate(s[:strings.IndexByte(s, 'T')]) {
			return fmt.Sprintf("%q is not a date and time", truncate(s, 40))
		}
	case "boolean":
		if s != "true" && s != "false" && s != "1" && s != "0" {
			return fmt.Sprintf("%q is not true or false", truncate(s, 40))
		}
	case "geopoint":
		if msg := checkPoint(s); msg != "" {
			return msg
		}
	case "geotrace", "geoshape":
		points := 0
		for _, p := range strings.Split(s, ";") {
			if strings.TrimSpace(p) == "" {
				continue
			}
			if msg := checkPoint(p); msg != "" {
				return msg
			}
			points++
		}
		if points == 0 {
			return fmt.Sprintf("%q has no points", truncate(s, 40))
		}
	case "select1":
		if n.Choices != nil && !n.Choices[s] {
			return fmt.Sprintf("%q is not one of the choices of this question", truncate(s, 40))
		}
	case "select", "rank":
		if n.Choices != nil {
			for _, c := range strings.Fields(s) {
				if !n.Choices[c] {
					return fmt.Sprintf("%q is not one of the choices of this question", truncate(c, 40))
				}
			}
		}
	case "binary":
		if err := SafeFileName(s); err != nil {
			return haven.ErrorMessage(err)
		}
	}
	return ""
}

func finite(s string) bool {
	f, err := strconv.ParseFloat(s, 64)
	return err == nil && !math.IsNaN(f) && !math.IsInf(f, 0) && !strings.ContainsAny(s, "xXpPnNiI_")
}

func validDate(s string) bool {
	neg := strings.HasPrefix(s, "-")
	parts := strings.Split(strings.TrimPrefix(s, "-"), "-")
	if neg || len(parts) != 3 {
		return false
	}
	m, _ := strconv.Atoi(parts[1])
	d, _ := strconv.Atoi(parts[2])
	return m >= 1 && m <= 12 && d >= 1 && d <= 31
}

func checkPoint(s string) string {
	fs := strings.Fields(s)
	if len(fs) < 2 || len(fs) > 4 {
		return fmt.Sprintf("%q is not a location (latitude longitude [altitude [accuracy]])", truncate(s, 60))
	}
	for i, x := range fs {
		if !finite(x) {
			return fmt.Sprintf("%q is not a location: %q is not a number", truncate(s, 60), x)
		}
		v, _ := strconv.ParseFloat(x, 64)
		if i == 0 && (v < -90 || v > 90) {
			return fmt.Sprintf("%q is not a location: latitude must be between -90 and 90", truncate(s, 60))
		}
		if i == 1 && (v < -180 || v > 180) {
			return fmt.Sprintf("%q is not a location: longitude must be between -180 and 180", truncate(s, 60))
		}
	}
	return ""
}

// Error returns the validation's problems as one EINVALID error (nil when
// there are none), listing every offending path in its details.
func (val Validation) Error(formID string) error {
	if len(val.Problems) == 0 {
		return nil
	}
	var b strings.Builder
	fmt.Fprintf(&b, "This submission does not fit form %s, so nothing was saved: ", formID)
	for i, p := range val.Problems {
		if i > 0 {
			b.WriteString("; ")
		}
		if i == 5 {
			fmt.Fprintf(&b, "and %d more", len(val.Problems)-5)
			break
		}
		b.WriteString(p.Path + " " + p.Message)
	}
	b.WriteString(". Update the form on the device (Get Blank Form) or ask your supervisor.")
	return &haven.Error{Code: haven.EINVALID, Message: b.String(), Details: map[string]any{"problems": val.Problems}}
}
