package loadgen

import (
	"bytes"
	"encoding/xml"
	"fmt"
	mrand "math/rand/v2"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/haven-org/haven/formspec"
)

// BenchForm returns the XForm the benchmarks use: a consent question, 30
// questions of the usual kinds (text, numbers, dates, selects, a location),
// one photo and a value looked up in a CSV (prices.csv, so the form has a
// manifest), with the given version. Every field declares a purpose and a
// tier, as Haven requires. A filled-in instance is about 2 KB of XML.
func BenchForm(version string) []byte {
	type q struct{ name, typ, choices string }
	var qs []q
	for i := 1; i <= 10; i++ {
		qs = append(qs, q{fmt.Sprintf("text_%02d", i), "string", ""})
	}
	for i := 1; i <= 6; i++ {
		qs = append(qs, q{fmt.Sprintf("count_%02d", i), "int", ""})
	}
	qs = append(qs, q{"income", "decimal", ""}, q{"distance_km", "decimal", ""},
		q{"arrival_date", "date", ""}, q{"birth_date", "date", ""}, q{"interview_start", "dateTime", ""},
		q{"location", "geopoint", ""})
	for i := 1; i <= 4; i++ {
		qs = append(qs, q{fmt.Sprintf("choice_%02d", i), "select1", "yes no unknown"})
	}
	qs = append(qs, q{"needs", "select", "food water shelter health education cash"},
		q{"vulnerabilities", "select", "elderly disability pregnant child_headed none"})
	qs = append([]q{{"consent", "select1", "yes no"}}, qs...)
	var b bytes.Buffer
	b.WriteString(`<?xml version="1.0" encoding="utf-8"?>
<h:html xmlns="http://www.w3.org/2002/xforms" xmlns:h="http://www.w3.org/1999/xhtml" xmlns:jr="http://openrosa.org/javarosa" xmlns:orx="http://openrosa.org/xforms" xmlns:haven="urn:haven:xforms">
<h:head><h:title>Haven benchmark survey</h:title><model haven:consent-field="/bench/consent"><instance><bench id="bench" version="` + version + `">`)
	for _, q := range qs {
		fmt.Fprintf(&b, "<%s/>", q.name)
	}
	b.WriteString(`<photo/><area_price/><meta><instanceID/></meta></bench></instance>`)
	for _, q := range qs {
		fmt.Fprintf(&b, `<bind nodeset="/bench/%s" type="%s" haven:purpose="Benchmark answer" haven:sensitivity="level_1"/>`, q.name, q.typ)
	}
	b.WriteString(`<bind nodeset="/bench/photo" type="binary" haven:purpose="Benchmark photo" haven:sensitivity="level_2"/><bind nodeset="/bench/area_price" type="string" calculate="pulldata('prices', 'price', 'district', 'north')" haven:purpose="Price lookup" haven:sensitivity="public"/><bind nodeset="/bench/meta/instanceID" type="string" readonly="true()" jr:preload="uid"/></model></h:head><h:body>`)
	for _, q := range qs {
		switch q.typ {
		case "select1", "select":
			fmt.Fprintf(&b, `<%s ref="/bench/%s"><label>%s</label>`, q.typ, q.name, q.name)
			for _, c := range strings.Fields(q.choices) {
				fmt.Fprintf(&b, `<item><label>%s</label><value>%s</value></item>`, c, c)
			}
			fmt.Fprintf(&b, `</%s>`, q.typ)
		default:
			fmt.Fprintf(&b, `<input ref="/bench/%s"><label>%s</label></input>`, q.name, q.name)
		}
	}
	b.WriteString(`<upload mediatype="image/*" ref="/bench/photo"><label>Photo</label></upload></h:body></h:html>`)
	return b.Bytes()
}

// BenchMedia is the media file BenchForm refers to.
var BenchMedia = []byte("district,price\nnorth,10\nsouth,12\n")

var words = strings.Fields("water shelter market school clinic river road village camp family field harvest rain well community health child elder")

// Instance fills in a form with valid answers of every field's type. When
// photo is not empty, the first binary field names it. It runs once per
// simulated submission on the cores the server uses too, so it writes
// straight into one buffer (BenchmarkInstance: 4 µs and 3 allocations; it
// was 30 µs and 256 with fmt and sorted choices per answer).
func Instance(f *formspec.Form, instanceID, photo string, r *mrand.Rand) []byte {
	b := make([]byte, 0, 3072)
	b = append(b, '<')
	b = append(b, f.Root.Name...)
	b = append(b, ` xmlns:orx="http://openrosa.org/xforms" id="`...)
	b = appendEscaped(b, f.ID)
	b = append(b, `" version="`...)
	b = appendEscaped(b, f.Version)
	b = append(b, `">`...)
	usedPhoto := false
	idPath := "/" + f.Root.Name + "/meta/instanceID"
	var walk func(n *formspec.Node)
	walk = func(n *formspec.Node) {
		for _, c := range n.Children {
			if c.IsGroup() {
				b = append(append(append(b, '<'), c.Name...), '>')
				walk(c)
				b = append(append(append(b, "</"...), c.Name...), '>')
				continue
			}
			start := len(b)
			b = append(append(append(b, '<'), c.Name...), '>')
			valueStart := len(b)
			switch {
			case c.Path == idPath:
				b = appendEscaped(b, instanceID)
			case c == f.Consent:
				b = append(b, "yes"...)
			case c.Type == "binary":
				if photo != "" && !usedPhoto {
					b, usedPhoto = appendEscaped(b, photo), true
				}
			default:
				b = appendValue(b, c, r)
			}
			if len(b) == valueStart { // no answer: an empty element
				b = append(append(append(b[:start], '<'), c.Name...), "/>"...)
				continue
			}
			b = append(append(append(b, "</"...), c.Name...), '>')
		}
	}
	walk(f.Root)
	b = append(append(append(b, "</"...), f.Root.Name...), '>')
	return b
}

// sortedChoices caches each select's choices in order, instead of sorting
// them for every answer.
var sortedChoices sync.Map // *formspec.Node -> []string

func choices(n *formspec.Node) []string {
	if cs, ok := sortedChoices.Load(n); ok {
		return cs.([]string)
	}
	cs := make([]string, 0, len(n.Choices))
	for c := range n.Choices {
		cs = append(cs, c)
	}
	sort.Strings(cs)
	sortedChoices.Store(n, cs)
	return cs
}

func appendValue(b []byte, n *formspec.Node, r *mrand.Rand) []byte {
	switch n.Type {
	case "int", "integer":
		return strconv.AppendInt(b, int64(r.IntN(100)), 10)
	case "decimal":
		return strconv.AppendFloat(b, r.Float64()*1000, 'f', 2, 64)
	case "date":
		return fmt.Appendf(b, "2026-%02d-%02d", 1+r.IntN(12), 1+r.IntN(28))
	case "time":
		return fmt.Appendf(b, "%02d:%02d:00.000+03:00", r.IntN(24), r.IntN(60))
	case "dateTime":
		return fmt.Appendf(b, "2026-11-%02dT%02d:%02d:00.000+03:00", 1+r.IntN(28), r.IntN(24), r.IntN(60))
	case "geopoint":
		return fmt.Appendf(b, "%.6f %.6f 12.0 5.0", -10+r.Float64()*20, 30+r.Float64()*20)
	case "geotrace", "geoshape":
		return append(b, "2.0 45.0 0 0;2.1 45.1 0 0;2.0 45.0 0 0"...)
	case "boolean":
		return append(b, "true"...)
	case "select1", "select", "rank":
		if cs := choices(n); len(cs) > 0 {
			return appendEscaped(b, cs[r.IntN(len(cs))])
		}
	case "string", "barcode":
		for i := range 6 + r.IntN(7) {
			if i > 0 {
				b = append(b, ' ')
			}
			b = append(b, words[r.IntN(len(words))]...)
		}
	}
	return b
}

func appendEscaped(b []byte, s string) []byte {
	if !strings.ContainsAny(s, `<>&"'`+"\r\n\t") {
		return append(b, s...)
	}
	var w bytes.Buffer
	xml.EscapeText(&w, []byte(s))
	return append(b, w.Bytes()...)
}
