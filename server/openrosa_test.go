package server

import (
	"encoding/xml"
	"reflect"
	"testing"
)

// The hand-written form list and manifest read back, through encoding/xml
// as through any XML parser, exactly as encoding/xml's own marshalling of
// the same entries does, whatever the names hold.
func TestDeviceDocuments(t *testing.T) {
	odd := "Santé & <nutrition> \"Q1\" 'x'\t\n\r\x01\xff\uFFFE end"
	forms := []xformEntry{
		{FormID: "household", Name: odd, Version: "2026", Hash: "md5:1", DownloadURL: "http://h/v1/forms/household.xml?a=1&b=2"},
		{FormID: "f2", Name: "", Version: "", Hash: "md5:2", DownloadURL: "u", ManifestURL: "http://h/m"},
	}
	type list struct {
		XMLName xml.Name     `xml:"http://openrosa.org/xforms/xformsList xforms"`
		Forms   []xformEntry `xml:"xform"`
	}
	var got, want list
	if err := xml.Unmarshal(formListXML(forms), &got); err != nil {
		t.Fatalf("the form list does not parse: %v\n%s", err, formListXML(forms))
	}
	ref, _ := xml.Marshal(list{Forms: forms})
	if err := xml.Unmarshal(ref, &want); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("form list reads back as\n%+v\nwant\n%+v", got, want)
	}
	if got.Forms[0].Name != "Santé & <nutrition> \"Q1\" 'x'\t\n\r\uFFFD\uFFFD\uFFFD end" {
		t.Errorf("name %q", got.Forms[0].Name)
	}
	if empty := formListXML(nil); string(empty) != xml.Header+`<xforms xmlns="http://openrosa.org/xforms/xformsList"></xforms>` {
		t.Errorf("empty list: %s", empty)
	}

	files := []mediaFile{{Filename: "a&b.jpg", Hash: "md5:3", DownloadURL: "http://h/a%26b.jpg"}, {Filename: odd, Hash: "md5:4", DownloadURL: "x"}}
	type manifest struct {
		XMLName xml.Name    `xml:"http://openrosa.org/xforms/xformsManifest manifest"`
		Files   []mediaFile `xml:"mediaFile"`
	}
	var gotM, wantM manifest
	if err := xml.Unmarshal(manifestXML(files), &gotM); err != nil {
		t.Fatalf("the manifest does not parse: %v", err)
	}
	ref, _ = xml.Marshal(manifest{Files: files})
	if err := xml.Unmarshal(ref, &wantM); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(gotM, wantM) {
		t.Errorf("manifest reads back as\n%+v\nwant\n%+v", gotM, wantM)
	}
}
