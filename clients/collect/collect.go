// Package collect is a Go client that speaks OpenRosa the way ODK Collect
// does: the same headers, deviceID on every request, challenge-driven Digest
// authentication, HEAD before submitting, and split uploads at the server's
// accept length and at 100 files, marked with *isIncomplete*. Haven's tests
// and load generator use it as the device.
package collect

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/rand"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// DefaultAcceptLength is what Collect assumes when the server does not say.
const DefaultAcceptLength = 10_000_000

// MaxFilesPerPost is how many files Collect sends in one request at most.
const MaxFilesPerPost = 100

// Client is one device.
type Client struct {
	// ServerURL is the URL configured in Collect: for app users
	// {origin}/v1/key/{token}/projects/{id}, for web users {origin}/v1/projects/{id}.
	ServerURL string
	DeviceID  string
	Username  string
	Password  string
	HTTP      *http.Client

	mu     sync.Mutex
	digest map[string]string // the last Digest challenge's fields
	nc     int
}

// New returns a client for a server URL with a random device id.
func New(serverURL string) *Client {
	var b [8]byte
	rand.Read(b[:])
	return &Client{
		ServerURL: strings.TrimRight(serverURL, "/"),
		DeviceID:  "collect:" + hex.EncodeToString(b[:]),
		HTTP:      &http.Client{Timeout: 5 * time.Minute},
	}
}

// Error is a response that was not what Collect accepts.
type Error struct {
	Status  int
	Message string // the OpenRosaResponse message, or the body
}

func (e *Error) Error() string { return fmt.Sprintf("HTTP %d: %s", e.Status, e.Message) }

// StatusOf returns the HTTP status of an *Error in err's chain, or 0.
func StatusOf(err error) int {
	var e *Error
	if errors.As(err, &e) {
		return e.Status
	}
	return 0
}

func (c *Client) withDevice(u string) string {
	sep := "?"
	if strings.Contains(u, "?") {
		sep = "&"
	}
	return u + sep + "deviceID=" + url.QueryEscape(c.DeviceID)
}

// do sends a request as Collect does, answering a Digest challenge once.
// body, when not nil, makes a fresh body for each attempt.
func (c *Client) do(ctx context.Context, method, u string, contentType string, body func() (io.Reader, int64)) (*http.Response, error) {
	for attempt := 0; ; attempt++ {
		var r io.Reader
		length := int64(0)
		if body != nil {
			r, length = body()
		}
		req, err := http.NewRequestWithContext(ctx, method, u, r)
		if err != nil {
			return nil, err
		}
		if body != nil {
			req.ContentLength = length // -1: chunked
		}
		req.Header.Set("X-OpenRosa-Version", "1.0")
		req.Header.Set("User-Agent", "org.odk.collect.android/v2024.3.0 (haven-client)")
		req.Header.Set("Date", time.Now().UTC().Format("Mon, 02 Jan 2006 03:04:05 PM GMT")) // Collect's 12-hour clock
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		if auth := c.authorization(method, req.URL.RequestURI()); auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := c.HTTP.Do(req)
		if err != nil {
			return nil, err
		}
		if resp.StatusCode == http.StatusUnauthorized && attempt == 0 && c.Username != "" && c.takeChallenge(resp) {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			continue
		}
		return resp, nil
	}
}

func (c *Client) takeChallenge(resp *http.Response) bool {
	for _, h := range resp.Header.Values("WWW-Authenticate") {
		if strings.HasPrefix(strings.ToLower(h), "digest ") {
			c.mu.Lock()
			c.digest, c.nc = parseChallenge(h[7:]), 0
			c.mu.Unlock()
			return true
		}
	}
	return false
}

func parseChallenge(s string) map[string]string {
	out := map[string]string{}
	for _, part := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if ok {
			out[strings.ToLower(k)] = strings.Trim(v, `"`)
		}
	}
	return out
}

func md5hex(s string) string {
	sum := md5.Sum([]byte(s))
	return hex.EncodeToString(sum[:])
}

// authorization returns the Digest header for a request, once a challenge has been seen.
func (c *Client) authorization(method, uri string) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.digest == nil || c.Username == "" {
		return ""
	}
	c.nc++
	nc := fmt.Sprintf("%08x", c.nc)
	var b [8]byte
	rand.Read(b[:])
	cnonce := hex.EncodeToString(b[:])
	d := c.digest
	ha1 := md5hex(c.Username + ":" + d["realm"] + ":" + c.Password)
	ha2 := md5hex(method + ":" + uri)
	resp := md5hex(strings.Join([]string{ha1, d["nonce"], nc, cnonce, "auth", ha2}, ":"))
	return fmt.Sprintf(`Digest username="%s", realm="%s", nonce="%s", uri="%s", qop=auth, nc=%s, cnonce="%s", response="%s", opaque="%s", algorithm=MD5`,
		c.Username, d["realm"], d["nonce"], uri, nc, cnonce, resp, d["opaque"])
}

func checkOpenRosa(resp *http.Response) error {
	if resp.Header.Get("X-OpenRosa-Version") != "1.0" {
		return fmt.Errorf("the server is not an OpenRosa server: no X-OpenRosa-Version: 1.0 header (HTTP %d)", resp.StatusCode)
	}
	return nil
}

func readError(resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	msg := strings.TrimSpace(string(b))
	var or struct {
		Messages []string `xml:"message"`
	}
	if xml.Unmarshal(b, &or) == nil && len(or.Messages) > 0 {
		msg = or.Messages[0]
	}
	return &Error{Status: resp.StatusCode, Message: msg}
}

// FormEntry is one <xform> of a form list.
type FormEntry struct {
	FormID      string `xml:"formID"`
	Name        string `xml:"name"`
	Version     string `xml:"version"`
	Hash        string `xml:"hash"`
	DownloadURL string `xml:"downloadUrl"`
	ManifestURL string `xml:"manifestUrl"`
}

func (c *Client) getXML(ctx context.Context, u string, v any) error {
	resp, err := c.do(ctx, http.MethodGet, c.withDevice(u), "", nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := checkOpenRosa(resp); err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return readError(resp)
	}
	if !strings.Contains(resp.Header.Get("Content-Type"), "text/xml") {
		return fmt.Errorf("%s answered Content-Type %q; Collect requires text/xml", u, resp.Header.Get("Content-Type"))
	}
	return xml.NewDecoder(resp.Body).Decode(v)
}

// FormList fetches the form list, and checks it as Collect does: an entry
// without formID, name or downloadUrl fails the whole list.
func (c *Client) FormList(ctx context.Context) ([]FormEntry, error) {
	var list struct {
		XMLName xml.Name    `xml:"http://openrosa.org/xforms/xformsList xforms"`
		Forms   []FormEntry `xml:"xform"`
	}
	if err := c.getXML(ctx, c.ServerURL+"/formList", &list); err != nil {
		return nil, err
	}
	for _, f := range list.Forms {
		if f.FormID == "" || f.Name == "" || f.DownloadURL == "" {
			return nil, fmt.Errorf("form list entry %+v lacks formID, name or downloadUrl", f)
		}
	}
	return list.Forms, nil
}

// MediaFile is one <mediaFile> of a manifest.
type MediaFile struct {
	// Type is "entityList" (or "approvalEntityList") for an entity list,
	// which Collect keeps in its entity database and checks against
	// IntegrityURL.
	Type         string `xml:"type,attr"`
	Filename     string `xml:"filename"`
	Hash         string `xml:"hash"`
	DownloadURL  string `xml:"downloadUrl"`
	IntegrityURL string `xml:"integrityUrl"`
}

// Manifest fetches a form's manifest, checked as Collect checks it.
func (c *Client) Manifest(ctx context.Context, manifestURL string) ([]MediaFile, error) {
	var m struct {
		XMLName xml.Name    `xml:"http://openrosa.org/xforms/xformsManifest manifest"`
		Files   []MediaFile `xml:"mediaFile"`
	}
	if err := c.getXML(ctx, manifestURL, &m); err != nil {
		return nil, err
	}
	for _, f := range m.Files {
		if f.Filename == "" || f.Hash == "" || f.DownloadURL == "" || strings.ContainsAny(f.Filename, `/\`) {
			return nil, fmt.Errorf("manifest entry %+v is not one Collect accepts", f)
		}
	}
	return m.Files, nil
}

// Integrity asks an entity list's integrity address which of the
// entities the device holds (by uuid) it should drop: deleted on the
// server, or no longer the device's to hold. It answers uuid -> deleted
// for the ids the server knows.
func (c *Client) Integrity(ctx context.Context, integrityURL string, ids []string) (map[string]bool, error) {
	u, err := url.Parse(integrityURL)
	if err != nil {
		return nil, err
	}
	q := u.Query()
	q.Set("id", strings.Join(ids, ","))
	u.RawQuery = q.Encode()
	var doc struct {
		Entities []struct {
			ID      string `xml:"id,attr"`
			Deleted bool   `xml:"deleted"`
		} `xml:"entities>entity"`
	}
	if err := c.getXML(ctx, u.String(), &doc); err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for _, e := range doc.Entities {
		out[e.ID] = e.Deleted
	}
	return out, nil
}

// Download fetches a form or media file and checks it against the md5:
// hash the list or manifest gave (when given).
func (c *Client) Download(ctx context.Context, u, hash string) ([]byte, error) {
	resp, err := c.do(ctx, http.MethodGet, c.withDevice(u), "", nil)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, readError(resp)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if hash != "" && "md5:"+md5hex(string(b)) != hash {
		return nil, fmt.Errorf("%s: content does not match hash %s", u, hash)
	}
	return b, nil
}

// File is an attachment in the instance folder.
type File struct {
	Name string
	Size int64
	Open func() (io.ReadCloser, error)
}

// BytesFile is a File held in memory.
func BytesFile(name string, b []byte) File {
	return File{Name: name, Size: int64(len(b)), Open: func() (io.ReadCloser, error) {
		return io.NopCloser(strings.NewReader(string(b))), nil
	}}
}

// DiskFile is a File on disk.
func DiskFile(name, path string) (File, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return File{}, err
	}
	return File{Name: name, Size: fi.Size(), Open: func() (io.ReadCloser, error) { return os.Open(path) }}, nil
}

// Result is the server's answer to the last request of a submission.
type Result struct {
	Status  int
	Message string
	Posts   int // how many requests the submission took
}

// AcceptLength asks the server, with HEAD as Collect does, how large one
// submission request may be.
func (c *Client) AcceptLength(ctx context.Context) (int64, error) {
	resp, err := c.do(ctx, http.MethodHead, c.withDevice(c.ServerURL+"/submission"), "", nil)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		return 0, &Error{Status: resp.StatusCode, Message: "HEAD /submission did not answer 204"}
	}
	if err := checkOpenRosa(resp); err != nil {
		return 0, err
	}
	n, err := strconv.ParseInt(resp.Header.Get("X-OpenRosa-Accept-Content-Length"), 10, 64)
	if err != nil || n <= 0 {
		return DefaultAcceptLength, nil
	}
	return n, nil
}

// Batches splits files as Collect does: a batch closes when the next file
// would take it past limit bytes (the XML counted in), or at 100 files; a file
// larger than the limit goes alone.
func Batches(xmlSize int64, files []File, limit int64) [][]File {
	var out [][]File
	var cur []File
	size := xmlSize
	for _, f := range files {
		if len(cur) > 0 && (size+f.Size > limit || len(cur) == MaxFilesPerPost) {
			out = append(out, cur)
			cur, size = nil, xmlSize
		}
		cur = append(cur, f)
		size += f.Size
	}
	if len(cur) > 0 || len(out) == 0 {
		out = append(out, cur)
	}
	return out
}

// Submit sends a filled-in form and its files: HEAD first, then one POST per
// batch, each carrying the XML, all but the last marked *isIncomplete*. It
// stops at the first answer that is not 201 or 202, as Collect does.
func (c *Client) Submit(ctx context.Context, xmlData []byte, files []File) (*Result, error) {
	limit, err := c.AcceptLength(ctx)
	if err != nil {
		return nil, err
	}
	batches := Batches(int64(len(xmlData)), files, limit)
	res := &Result{}
	for i, batch := range batches {
		res.Posts++
		status, msg, err := c.post(ctx, xmlData, batch, i < len(batches)-1)
		if err != nil {
			return res, err
		}
		res.Status, res.Message = status, msg
		if status != http.StatusCreated && status != http.StatusAccepted {
			return res, &Error{Status: status, Message: msg}
		}
	}
	return res, nil
}

// smallBody is the size under which a request body is built in memory.
const smallBody = 1 << 20

// post sends one multipart request: bodies under 1 MiB from memory with a
// Content-Length, larger ones streamed with chunked encoding (never whole in
// memory). A Digest retry sends the body again from the start.
func (c *Client) post(ctx context.Context, xmlData []byte, files []File, incomplete bool) (int, string, error) {
	var b [16]byte
	rand.Read(b[:])
	boundary := "haven-collect-" + hex.EncodeToString(b[:])
	var pipes []*io.PipeReader
	var size int64 = int64(len(xmlData))
	for _, f := range files {
		size += f.Size
	}
	body := func() (io.Reader, int64) {
		if size < smallBody {
			// Small: built in memory and sent with a Content-Length, as OkHttp does.
			var buf bytes.Buffer
			mw := multipart.NewWriter(&buf)
			mw.SetBoundary(boundary)
			if err := writeParts(mw, xmlData, files, incomplete); err != nil {
				pr, pw := io.Pipe()
				pw.CloseWithError(err)
				return pr, -1
			}
			return bytes.NewReader(buf.Bytes()), int64(buf.Len())
		}
		// Large: streamed, chunked, never whole in memory.
		pr, pw := io.Pipe()
		mw := multipart.NewWriter(pw)
		mw.SetBoundary(boundary)
		go func() { pw.CloseWithError(writeParts(mw, xmlData, files, incomplete)) }()
		pipes = append(pipes, pr)
		return pr, -1
	}
	resp, err := c.do(ctx, http.MethodPost, c.withDevice(c.ServerURL+"/submission"), "multipart/form-data; boundary="+boundary, body)
	defer func() {
		for _, p := range pipes {
			p.Close() // stops the writer goroutine if the server answered early
		}
	}()
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	if err := checkOpenRosa(resp); err != nil {
		return 0, "", err
	}
	if resp.StatusCode != http.StatusCreated && resp.StatusCode != http.StatusAccepted {
		e := readError(resp).(*Error)
		return e.Status, e.Message, nil
	}
	var or struct {
		Messages []string `xml:"message"`
	}
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err := xml.Unmarshal(raw, &or); err != nil || len(or.Messages) == 0 {
		return resp.StatusCode, "", fmt.Errorf("success without an OpenRosaResponse body: Collect treats this as a failure")
	}
	return resp.StatusCode, or.Messages[0], nil
}

func writeParts(mw *multipart.Writer, xmlData []byte, files []File, incomplete bool) error {
	h := make(map[string][]string)
	h["Content-Disposition"] = []string{`form-data; name="xml_submission_file"; filename="submission.xml"`}
	h["Content-Type"] = []string{"text/xml"}
	w, err := mw.CreatePart(h)
	if err != nil {
		return err
	}
	if _, err := w.Write(xmlData); err != nil {
		return err
	}
	for _, f := range files {
		w, err := mw.CreateFormFile(f.Name, f.Name)
		if err != nil {
			return err
		}
		r, err := f.Open()
		if err != nil {
			return err
		}
		_, err = io.Copy(w, r)
		r.Close()
		if err != nil {
			return err
		}
	}
	if incomplete {
		if err := mw.WriteField("*isIncomplete*", "yes"); err != nil {
			return err
		}
	}
	return mw.Close()
}
