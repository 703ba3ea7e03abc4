package formspec

import (
	"crypto/rand"
	"fmt"
	"strings"

	"github.com/beevik/etree"
)

// Data returns a submission's values as JSON-ready maps: groups as objects,
// repeats as arrays of objects, fields as strings. When keep is not nil it
// decides which fields are included, and elements the form does not define
// are left out; the schema paths left out are returned, once each, in
// document order.
func (f *Form) Data(inst *Instance, keep func(*Node) bool) (map[string]any, []string) {
	var omitted []string
	seen := map[string]bool{}
	omit := func(p string) {
		if !seen[p] {
			seen[p] = true
			omitted = append(omitted, p)
		}
	}
	var walk func(e *Element, path string) map[string]any
	walk = func(e *Element, path string) map[string]any {
		out := map[string]any{}
		for _, c := range e.Children {
			p := path + "/" + c.Name
			n := f.Node(p)
			if keep != nil && (n == nil || (!n.IsGroup() && !keep(n))) {
				omit(p)
				continue
			}
			var v any = c.Text
			if len(c.Children) > 0 || (n != nil && n.IsGroup()) {
				v = walk(c, p)
			}
			if n != nil && n.Repeat {
				list, _ := out[c.Name].([]any)
				out[c.Name] = append(list, v)
				continue
			}
			out[c.Name] = v
		}
		return out
	}
	if inst.Root == nil {
		return map[string]any{}, nil
	}
	return walk(inst.Root, "/"+inst.Root.Name), omitted
}

// FileFields maps each file a submission names to the path of the field
// that names it.
func (f *Form) FileFields(inst *Instance) map[string]string {
	out := map[string]string{}
	var walk func(e *Element, path string)
	walk = func(e *Element, path string) {
		for _, c := range e.Children {
			p := path + "/" + c.Name
			if len(c.Children) > 0 {
				walk(c, p)
			} else if n := f.Node(p); n != nil && n.Type == "binary" && c.Text != "" {
				out[c.Text] = p
			}
		}
	}
	if inst.Root != nil {
		walk(inst.Root, "/"+inst.Root.Name)
	}
	return out
}

// Correct returns a copy of a submission's XML with the given fields set to
// new values, as a new version: a new meta/instanceID, and meta/deprecatedID
// naming the version it replaces. Fields are absolute paths of fields
// outside repeats. It returns the new instanceID.
func (f *Form) Correct(xml []byte, values map[string]string) ([]byte, string, error) {
	if len(values) == 0 {
		return nil, "", invalid("The correction changes no field. Give at least one field path and its corrected value.")
	}
	for p := range values {
		n := f.Node(p)
		switch {
		case n == nil:
			return nil, "", invalid("%q is not a field of this form. Use the field's full path, as GET .../fields lists it.", p)
		case n.IsGroup():
			return nil, "", invalid("%q is a group or repeat, not a field. Correct the fields inside it one by one.", p)
		case f.InRepeat(n):
			return nil, "", invalid("%q is inside a repeat; corrections of repeated fields are not supported. Delete and resubmit the form, or correct it on the device.", p)
		case n.Type == "binary":
			return nil, "", invalid("%q holds a file; files cannot be corrected on the server.", p)
		case f.IsMetadata(n) || n == f.Consent:
			return nil, "", invalid("%q is recorded by the device or is the consent answer, and cannot be corrected. To undo consent, withdraw it.", p)
		}
	}
	doc := etree.NewDocument()
	if err := doc.ReadFromBytes(xml); err != nil {
		return nil, "", err
	}
	root := doc.Root()
	if root == nil {
		return nil, "", invalid("The stored submission has no root element.")
	}
	for p, v := range values {
		e := root
		for _, part := range strings.Split(strings.Trim(p, "/"), "/")[1:] {
			next := localChild(e, part)
			if next == nil {
				next = e.CreateElement(part)
			}
			e = next
		}
		e.Child = nil
		e.SetText(v)
	}
	meta := localChild(root, "meta")
	if meta == nil {
		meta = root.CreateElement("meta")
	}
	idEl := localChild(meta, "instanceID")
	if idEl == nil {
		return nil, "", invalid("The stored submission has no meta/instanceID.")
	}
	old := strings.TrimSpace(idEl.Text())
	newID := NewInstanceID()
	idEl.SetText(newID)
	dep := localChild(meta, "deprecatedID")
	if dep == nil {
		dep = meta.CreateElement("deprecatedID")
		if idEl.Space != "" {
			dep.Space = idEl.Space
		}
	}
	dep.SetText(old)
	out, err := doc.WriteToBytes()
	return out, newID, err
}

func localChild(e *etree.Element, name string) *etree.Element {
	for _, c := range e.ChildElements() {
		if c.Tag == name {
			return c
		}
	}
	return nil
}

// NewInstanceID returns a random instance ID as ODK Collect makes them.
func NewInstanceID() string {
	var b [16]byte
	rand.Read(b[:]) // never fails (crypto/rand crashes the program instead)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("uuid:%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}
