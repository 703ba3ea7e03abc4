package loadgen

import (
	"bytes"
	"encoding/xml"
	"fmt"
	mrand "math/rand/v2"
	"sort"
	"strings"

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
// photo is not empty, the first binary field names it.
func Instance(f *formspec.Form, instanceID, photo string, r *mrand.Rand) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, `<%s xmlns:orx="http://openrosa.org/xforms" id="%s" version="%s">`, f.Root.Name, escape(f.ID), escape(f.Version))
	usedPhoto := false
	var walk func(n *formspec.Node)
	walk = func(n *formspec.Node) {
		for _, c := range n.Children {
			if c.IsGroup() {
				fmt.Fprintf(&b, "<%s>", c.Name)
				walk(c)
				fmt.Fprintf(&b, "</%s>", c.Name)
				continue
			}
			v := ""
			switch {
			case c.Path == "/"+f.Root.Name+"/meta/instanceID":
				v = instanceID
			case c == f.Consent:
				v = "yes"
			case c.Type == "binary":
				if photo != "" && !usedPhoto {
					v, usedPhoto = photo, true
				}
			default:
				v = value(c, r)
			}
			if v == "" {
				fmt.Fprintf(&b, "<%s/>", c.Name)
			} else {
				fmt.Fprintf(&b, "<%s>%s</%s>", c.Name, escape(v), c.Name)
			}
		}
	}
	walk(f.Root)
	fmt.Fprintf(&b, "</%s>", f.Root.Name)
	return b.Bytes()
}

func choices(n *formspec.Node) []string {
	var cs []string
	for c := range n.Choices {
		cs = append(cs, c)
	}
	sort.Strings(cs)
	return cs
}

func value(n *formspec.Node, r *mrand.Rand) string {
	switch n.Type {
	case "int", "integer":
		return fmt.Sprint(r.IntN(100))
	case "decimal":
		return fmt.Sprintf("%.2f", r.Float64()*1000)
	case "date":
		return fmt.Sprintf("2026-%02d-%02d", 1+r.IntN(12), 1+r.IntN(28))
	case "time":
		return fmt.Sprintf("%02d:%02d:00.000+03:00", r.IntN(24), r.IntN(60))
	case "dateTime":
		return fmt.Sprintf("2026-11-%02dT%02d:%02d:00.000+03:00", 1+r.IntN(28), r.IntN(24), r.IntN(60))
	case "geopoint":
		return fmt.Sprintf("%.6f %.6f 12.0 5.0", -10+r.Float64()*20, 30+r.Float64()*20)
	case "geotrace", "geoshape":
		return "2.0 45.0 0 0;2.1 45.1 0 0;2.0 45.0 0 0"
	case "boolean":
		return "true"
	case "select1", "select", "rank":
		cs := choices(n)
		if len(cs) == 0 {
			return ""
		}
		return cs[r.IntN(len(cs))]
	case "string", "barcode":
		k := 6 + r.IntN(7)
		parts := make([]string, k)
		for i := range parts {
			parts[i] = words[r.IntN(len(words))]
		}
		return strings.Join(parts, " ")
	}
	return ""
}

func escape(s string) string {
	var b strings.Builder
	xml.EscapeText(&b, []byte(s))
	return b.String()
}
