package server_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"mime/multipart"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/haven-org/haven/app"
	"github.com/haven-org/haven/server"
	"github.com/haven-org/haven/storage"
)

// hostile is a request the suite sends, and what must come back.
type hostile struct {
	name string
	// Either an HTTP request...
	method, path, ct string
	body             func() io.Reader
	header           map[string]string
	// ...or raw bytes on a TCP connection (nil response: the server may just close).
	raw func(addr string) (status int, err error)
	// Acceptable statuses (0 in raw cases: the connection closed without an answer).
	want []int
	says string // part of the error message, when an answer has a body
}

func multipartBody(parts ...[3]string) (string, func() io.Reader) {
	var b bytes.Buffer
	w := multipart.NewWriter(&b)
	for _, p := range parts {
		h := make(map[string][]string)
		if p[1] == "" {
			h["Content-Disposition"] = []string{fmt.Sprintf(`form-data; name="%s"`, p[0])}
		} else {
			h["Content-Disposition"] = []string{fmt.Sprintf(`form-data; name="%s"; filename="%s"`, p[0], p[1])}
		}
		pw, _ := w.CreatePart(h)
		pw.Write([]byte(p[2]))
	}
	w.Close()
	data := b.Bytes()
	return w.FormDataContentType(), func() io.Reader { return bytes.NewReader(data) }
}

// rawRequest writes req on a new connection and reads the answer.
func rawRequest(addr, req string) (int, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		return 0, nil
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return 0, nil // closed without an answer
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// stalled writes the start of a request, sends nothing more, and fails
// unless the server gives up on it (answers or hangs up) within 3 s.
func stalled(addr, start string) (int, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	io.WriteString(c, start)
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		return 0, fmt.Errorf("the server still waits for the rest of the request after 3 s")
	}
	if err != nil {
		return 0, nil // it hung up
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// TestHostileInputs sends malicious and broken requests to a real server:
// each gets a clear error, the server stays up with bounded memory, and
// nothing is stored.
func TestHostileInputs(t *testing.T) {
	e := newEnv(t)
	pid, dev := e.project()
	e.collector(pid, "d@example.org", "collector pass")

	// The same data directory behind Haven's own http.Server, timeouts shortened.
	h := server.New(server.Config{ReadHeaderTimeout: 300 * time.Millisecond, BodyIdleTimeout: 300 * time.Millisecond},
		app.New(e.st, app.Options{}), slog.New(slog.NewTextHandler(io.Discard, nil)))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := h.HTTPServer(ln.Addr().String())
	go hs.Serve(ln)
	defer hs.Close()
	addr := ln.Addr().String()
	base := "http://" + addr
	key := dev.ServerURL[strings.Index(dev.ServerURL, "/v1/key/"):]
	sub := key + "/submission"
	good := string(instance("uuid:h-1", "A", "p.jpg"))
	xmlWith := func(s string) func() io.Reader { return func() io.Reader { return strings.NewReader(s) } }

	bomb := `<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;"><!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">]><household id="household"><head_name>&lol3;</head_name><meta><instanceID>uuid:b</instanceID></meta></household>`
	xxe := `<?xml version="1.0"?><!DOCTYPE household [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><household id="household"><head_name>&xxe;</head_name><meta><instanceID>uuid:x</instanceID></meta></household>`
	deep := `<household id="household">` + strings.Repeat("<shelter>", 10000) + strings.Repeat("</shelter>", 10000) + `<meta><instanceID>uuid:d</instanceID></meta></household>`
	ct := func(parts ...[3]string) (string, func() io.Reader) { return multipartBody(parts...) }
	xmlPart := func(x string) [3]string { return [3]string{"xml_submission_file", "submission.xml", x} }

	ctBomb, bBomb := ct(xmlPart(bomb))
	ctXXE, bXXE := ct(xmlPart(xxe))
	ctDoctype, bDoctype := ct(xmlPart(`<!DOCTYPE household><household id="household"><meta><instanceID>uuid:dt</instanceID></meta></household>`))
	ctParam, bParam := ct(xmlPart(`<!DOCTYPE x [<!ENTITY % p SYSTEM "http://127.0.0.1:1/x">%p;]><household id="household"/>`))
	ctDeep, bDeep := ct(xmlPart(deep))
	ctUTF, bUTF := ct(xmlPart("<household id=\"household\"><head_name>\xc3\x28</head_name><meta><instanceID>uuid:u</instanceID></meta></household>"))
	ctLatin, bLatin := ct(xmlPart(`<?xml version="1.0" encoding="ISO-8859-1"?><household id="household"><meta><instanceID>uuid:l</instanceID></meta></household>`))
	ctTrav, bTrav := ct(xmlPart(good), [3]string{"../../etc/passwd", "../../etc/passwd", "x"})
	ctAbs, bAbs := ct(xmlPart(good), [3]string{"f", "/etc/passwd", "x"})
	ctNUL, bNUL := ct(xmlPart(good), [3]string{"p.jpg\x00.sh", "p.jpg\x00.sh", "x"})
	ctBack, bBack := ct(xmlPart(good), [3]string{`..\..\p.jpg`, `..\..\p.jpg`, "x"})
	ctDup, bDup := ct(xmlPart(good), [3]string{"p.jpg", "p.jpg", "x"}, [3]string{"p.jpg", "p.jpg", "y"})
	ctTwoXML, bTwoXML := ct(xmlPart(good), xmlPart(good))
	ctNoXML, bNoXML := ct([3]string{"p.jpg", "p.jpg", "x"})
	ctUnknown, bUnknown := ct(xmlPart(strings.Replace(good, "<price>", "<ssn>1</ssn><price>", 1)))
	ctOtherForm, bOtherForm := ct(xmlPart(strings.Replace(good, `id="household"`, `id="x' OR '1'='1"`, 1)))
	ctBadID, bBadID := ct(xmlPart(strings.Replace(good, "uuid:h-1", "uuid:../../../h", 1)))
	ctUnref, bUnref := ct(xmlPart(good), [3]string{"evil.exe", "evil.exe", "MZ"})
	var many [][3]string
	many = append(many, xmlPart(good))
	for i := 0; i < 5000; i++ {
		many = append(many, [3]string{fmt.Sprintf("f%d.jpg", i), fmt.Sprintf("f%d.jpg", i), "x"})
	}
	ctMany, bMany := ct(many...)
	hugeXML := `<household id="household"><head_name>` + strings.Repeat("A", 12<<20) + `</head_name><meta><instanceID>uuid:big</instanceID></meta></household>`
	ctHuge, bHuge := ct(xmlPart(hugeXML))
	ctBigHeader, bBigHeader := ct(xmlPart(good), [3]string{"p.jpg", strings.Repeat("a", 1<<20), "x"})

	jwtKey := storage.DeriveSecret(e.st.MasterKey, "jwt")
	sign := func(key []byte, method jwt.SigningMethod, claims jwt.MapClaims) string {
		tok, _ := jwt.NewWithClaims(method, claims).SignedString(key)
		return tok
	}
	expired := sign(jwtKey, jwt.SigningMethodHS256, jwt.MapClaims{"iss": "haven", "sub": "1", "jti": "x", "exp": time.Now().Add(-time.Hour).Unix()})
	forged := sign([]byte("not the server's key, but the right length!!"), jwt.SigningMethodHS256, jwt.MapClaims{"iss": "haven", "sub": "1", "jti": "x", "exp": time.Now().Add(time.Hour).Unix()})
	noSession := sign(jwtKey, jwt.SigningMethodHS256, jwt.MapClaims{"iss": "haven", "sub": "1", "jti": "never-issued", "exp": time.Now().Add(time.Hour).Unix()})
	none, _ := jwt.NewWithClaims(jwt.SigningMethodNone, jwt.MapClaims{"iss": "haven", "sub": "1", "exp": time.Now().Add(time.Hour).Unix()}).SignedString(jwt.UnsafeAllowNoneSignatureType)
	subs := fmt.Sprintf("/v1/projects/%d/forms/household/submissions", pid)

	zipBomb := func() io.Reader {
		return bytes.NewReader(append([]byte("PK\x03\x04"), bytes.Repeat([]byte{0}, 1000)...))
	}

	cases := []hostile{
		{name: "billion laughs", method: "POST", path: sub, ct: ctBomb, body: bBomb, want: []int{400}, says: "DOCTYPE"},
		{name: "external entity", method: "POST", path: sub, ct: ctXXE, body: bXXE, want: []int{400}, says: "DOCTYPE"},
		{name: "plain DOCTYPE", method: "POST", path: sub, ct: ctDoctype, body: bDoctype, want: []int{400}, says: "DOCTYPE"},
		{name: "parameter entity", method: "POST", path: sub, ct: ctParam, body: bParam, want: []int{400}, says: "DOCTYPE"},
		{name: "deep nesting", method: "POST", path: sub, ct: ctDeep, body: bDeep, want: []int{400}, says: "nested"},
		{name: "invalid UTF-8", method: "POST", path: sub, ct: ctUTF, body: bUTF, want: []int{400}, says: "UTF-8"},
		{name: "another encoding", method: "POST", path: sub, ct: ctLatin, body: bLatin, want: []int{400}, says: "XML"},
		{name: "12 MB single-line XML", method: "POST", path: sub, ct: ctHuge, body: bHuge, want: []int{413}, says: "bytes"},
		{name: "path traversal in a file name", method: "POST", path: sub, ct: ctTrav, body: bTrav, want: []int{400}, says: "cannot be used"},
		{name: "absolute path as a file name", method: "POST", path: sub, ct: ctAbs, body: bAbs, want: []int{400}, says: "cannot be used"},
		{name: "NUL in a file name", method: "POST", path: sub, ct: ctNUL, body: bNUL, want: []int{400}, says: ""},
		{name: "backslashes in a file name", method: "POST", path: sub, ct: ctBack, body: bBack, want: []int{400}, says: "cannot be used"},
		{name: "duplicate file parts", method: "POST", path: sub, ct: ctDup, body: bDup, want: []int{400}, says: "twice"},
		{name: "two xml parts", method: "POST", path: sub, ct: ctTwoXML, body: bTwoXML, want: []int{400}, says: "more than one"},
		{name: "no xml part", method: "POST", path: sub, ct: ctNoXML, body: bNoXML, want: []int{400}, says: "xml_submission_file"},
		{name: "5,000 parts", method: "POST", path: sub, ct: ctMany, body: bMany, want: []int{400, 413}},
		{name: "1 MB file name", method: "POST", path: sub, ct: ctBigHeader, body: bBigHeader, want: []int{400}, says: "cannot be used"},
		{name: "field the form does not define", method: "POST", path: sub, ct: ctUnknown, body: bUnknown, want: []int{400}, says: "/household/ssn"},
		{name: "SQL in the form id", method: "POST", path: sub, ct: ctOtherForm, body: bOtherForm, want: []int{404}, says: "not on this server"},
		{name: "path in the instanceID", method: "POST", path: sub, ct: ctBadID, body: bBadID, want: []int{400}, says: "instanceID"},
		{name: "file no question names", method: "POST", path: sub, ct: ctUnref, body: bUnref, want: []int{400}, says: "evil.exe"},
		{name: "wrong boundary", method: "POST", path: sub, ct: "multipart/form-data; boundary=nope", body: bUnref, want: []int{400}},
		{name: "no boundary", method: "POST", path: sub, ct: "multipart/form-data", body: bUnref, want: []int{400}, says: "multipart"},
		{name: "not multipart", method: "POST", path: sub, ct: "application/json", body: xmlWith(`{"a":1}`), want: []int{400}, says: "multipart"},
		{name: "empty body", method: "POST", path: sub, ct: ctNoXML, body: xmlWith(""), want: []int{400}},
		{name: "truncated body", raw: func(a string) (int, error) {
			return stalled(a, "POST "+sub+" HTTP/1.1\r\nHost: x\r\nContent-Type: "+ctXXE+"\r\nContent-Length: 100000\r\n\r\n--"+ctXXE[strings.Index(ctXXE, "=")+1:]+"\r\n")
		}, want: []int{0, 400}},
		{name: "slow-loris headers", raw: func(a string) (int, error) {
			return stalled(a, "GET / HTTP/1.1\r\nHost: x\r\nX-Slow: 1")
		}, want: []int{0, 408}},
		{name: "stalled body", raw: func(a string) (int, error) {
			return stalled(a, "POST "+sub+" HTTP/1.1\r\nHost: x\r\nContent-Type: "+ctXXE+"\r\nContent-Length: 5000\r\n\r\n--x")
		}, want: []int{0, 400}},
		{name: "bad chunked encoding", raw: func(a string) (int, error) {
			return rawRequest(a, "POST "+sub+" HTTP/1.1\r\nHost: x\r\nContent-Type: "+ctXXE+"\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n")
		}, want: []int{0, 400}},
		{name: "request smuggling: Content-Length and chunked", raw: func(a string) (int, error) {
			return rawRequest(a, "POST "+sub+" HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
		}, want: []int{0, 400}},
		{name: "100 KB header", method: "GET", path: "/", header: map[string]string{"X-Big": strings.Repeat("a", 100<<10)}, want: []int{431}},
		{name: "forged JWT", method: "GET", path: subs, header: map[string]string{"Authorization": "Bearer " + forged}, want: []int{401}, says: "not valid"},
		{name: "expired JWT", method: "GET", path: subs, header: map[string]string{"Authorization": "Bearer " + expired}, want: []int{401}, says: "expired"},
		{name: "JWT with alg none", method: "GET", path: subs, header: map[string]string{"Authorization": "Bearer " + none}, want: []int{401}},
		{name: "JWT never issued", method: "GET", path: subs, header: map[string]string{"Authorization": "Bearer " + noSession}, want: []int{401}, says: "ended"},
		{name: "garbage bearer", method: "GET", path: subs, header: map[string]string{"Authorization": "Bearer ' OR 1=1 --"}, want: []int{401}},
		{name: "unknown auth scheme", method: "GET", path: subs, header: map[string]string{"Authorization": "Negotiate abc"}, want: []int{401}, says: "scheme"},
		{name: "Basic over plain http", method: "GET", path: fmt.Sprintf("/v1/projects/%d/formList", pid), header: map[string]string{"Authorization": "Basic ZEBleGFtcGxlLm9yZzpjb2xsZWN0b3IgcGFzcw=="}, want: []int{401}, says: "https"},
		{name: "Digest with a made-up nonce", method: "GET", path: fmt.Sprintf("/v1/projects/%d/formList", pid), header: map[string]string{"Authorization": `Digest username="d@example.org", realm="Haven", nonce="abc", uri="/x", qop=auth, nc=00000001, cnonce="c", response="0"`}, want: []int{401}, says: "nonce"},
		{name: "Digest for another URI", method: "GET", path: fmt.Sprintf("/v1/projects/%d/formList", pid), header: map[string]string{"Authorization": `Digest username="d@example.org", realm="Haven", nonce="AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", uri="/other", qop=auth, nc=00000001, cnonce="c", response="0"`}, want: []int{401}},
		{name: "made-up device token", method: "GET", path: "/v1/key/abc'%20OR%20'1'='1/projects/1/formList", want: []int{403}, says: "not valid"},
		{name: "SQL in the project id", method: "GET", path: "/v1/projects/1%20OR%201=1/forms", header: map[string]string{"Authorization": "Bearer " + e.token}, want: []int{404}},
		{name: "SQL in the form id", method: "GET", path: fmt.Sprintf("/v1/projects/%d/forms/x'%%3B%%20DROP%%20TABLE%%20forms%%3B--", pid), header: map[string]string{"Authorization": "Bearer " + e.token}, want: []int{404}},
		{name: "SQL in the instance id", method: "GET", path: subs + "/uuid:1'%20OR%20'1'='1", header: map[string]string{"Authorization": "Bearer " + e.token}, want: []int{404}},
		{name: "SQL in limit", method: "GET", path: subs + "?limit=1%3BDROP%20TABLE%20submissions", header: map[string]string{"Authorization": "Bearer " + e.token}, want: []int{400}, says: "limit"},
		{name: "XForm with a DOCTYPE", method: "POST", path: fmt.Sprintf("/v1/projects/%d/forms", pid), ct: "application/xml", body: xmlWith(`<!DOCTYPE h:html [<!ENTITY x SYSTEM "file:///etc/passwd">]><h:html/>`), header: map[string]string{"Authorization": "Bearer " + e.token}, want: []int{400}, says: "DOCTYPE"},
		{name: "20 MB XForm", method: "POST", path: fmt.Sprintf("/v1/projects/%d/forms", pid), ct: "application/xml", body: func() io.Reader { return bytes.NewReader(bytes.Repeat([]byte("<"), 20<<20)) }, header: map[string]string{"Authorization": "Bearer " + e.token}, want: []int{413}},
		{name: "zip bomb as an .xlsx", method: "POST", path: fmt.Sprintf("/v1/projects/%d/forms", pid), ct: "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", body: zipBomb, header: map[string]string{"Authorization": "Bearer " + e.token}, want: []int{400}},
		{name: "path traversal in a form media name", method: "POST", path: fmt.Sprintf("/v1/projects/%d/forms/household/draft/attachments/..%%2F..%%2Fmaster.key", pid), ct: "text/csv", body: xmlWith("x"), header: map[string]string{"Authorization": "Bearer " + e.token}, want: []int{400, 404}},
	}
	if len(cases) < 40 {
		t.Fatalf("the suite has %d cases; it promises at least 40", len(cases))
	}
	rowsBefore, filesBefore := e.blobRows(), len(e.blobFiles())
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			status, body := 0, ""
			if c.raw != nil {
				var err error
				if status, err = c.raw(addr); err != nil {
					t.Fatal(err)
				}
			} else {
				var r io.Reader
				if c.body != nil {
					r = c.body()
				}
				req, _ := http.NewRequestWithContext(context.Background(), c.method, base+c.path, r)
				if c.ct != "" {
					req.Header.Set("Content-Type", c.ct)
				}
				for k, v := range c.header {
					req.Header.Set(k, v)
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				status, body = resp.StatusCode, string(b)
			}
			ok := false
			for _, w := range c.want {
				ok = ok || status == w
			}
			if !ok || !strings.Contains(body, c.says) {
				t.Fatalf("status %d, want %v; body %.300q (want it to say %q)", status, c.want, body, c.says)
			}
			if status >= 400 && c.raw == nil && status != 431 && len(strings.TrimSpace(body)) < 20 {
				t.Fatalf("the refusal does not say what was wrong: %q", body)
			}
			// The server is still up.
			resp, err := http.Get(base + "/")
			if err != nil || resp.StatusCode != 200 {
				t.Fatalf("server down after %s: %v", c.name, err)
			}
			resp.Body.Close()
		})
	}
	// Nothing was stored, and memory stayed bounded.
	if n := e.submissionCount(pid); n != 0 {
		t.Fatalf("%d submissions stored", n)
	}
	if r, f := e.blobRows(), len(e.blobFiles()); r != rowsBefore || f != filesBefore {
		t.Fatalf("objects %d -> %d, files %d -> %d", rowsBefore, r, filesBefore, f)
	}
	var forms []struct{ XMLFormID string }
	e.admin("GET", fmt.Sprintf("/v1/projects/%d/forms", pid), nil, &forms)
	if len(forms) != 1 {
		t.Fatalf("forms: %+v", forms)
	}
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	if ms.HeapInuse > 256<<20 {
		t.Fatalf("heap in use after the suite: %d MB", ms.HeapInuse>>20)
	}
}
