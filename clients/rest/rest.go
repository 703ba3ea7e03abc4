// Package rest is a Go client of Haven's REST API (the ODK Central-shaped
// endpoints under /v1), used by Haven's own commands.
package rest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/haven-org/haven"
)

// Client talks to one Haven server as one logged-in user.
type Client struct {
	BaseURL string
	Token   string
	HTTP    *http.Client
}

// Error is an error answer of the API.
type Error struct {
	Status  int
	Code    float64
	Message string
}

func (e *Error) Error() string { return fmt.Sprintf("%s (HTTP %d)", e.Message, e.Status) }

// Login opens a session and returns a client that uses it.
func Login(ctx context.Context, baseURL, email, password string) (*Client, error) {
	c := &Client{BaseURL: strings.TrimRight(baseURL, "/"), HTTP: &http.Client{Timeout: time.Minute}}
	var out struct{ Token string }
	body, _ := json.Marshal(map[string]string{"email": email, "password": password})
	if err := c.Do(ctx, "POST", "/v1/sessions", "application/json", bytes.NewReader(body), &out); err != nil {
		return nil, err
	}
	c.Token = out.Token
	return c, nil
}

// Get fetches path and returns the body as it is (a submission's XML, a
// file), or an *Error for an error answer.
func (c *Client) Get(ctx context.Context, path string) ([]byte, error) {
	var raw rawBody
	err := c.Do(ctx, "GET", path, "", nil, &raw)
	return raw, err
}

// rawBody receives a body without decoding it.
type rawBody []byte

// Do sends a request and decodes a JSON answer into out (when not nil; a
// *rawBody takes the body as it is).
func (c *Client) Do(ctx context.Context, method, path, contentType string, body io.Reader, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, c.BaseURL+path, body)
	if err != nil {
		return err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 {
		e := &Error{Status: resp.StatusCode}
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		if json.Unmarshal(b, e) != nil || e.Message == "" {
			e.Message = strings.TrimSpace(string(b))
		}
		return e
	}
	switch out := out.(type) {
	case nil:
		_, err = io.Copy(io.Discard, resp.Body)
		return err
	case *rawBody:
		*out, err = io.ReadAll(resp.Body)
		return err
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

func (c *Client) json(ctx context.Context, method, path string, in, out any) error {
	b, err := json.Marshal(in)
	if err != nil {
		return err
	}
	return c.Do(ctx, method, path, "application/json", bytes.NewReader(b), out)
}

// CreateProject makes a project.
func (c *Client) CreateProject(ctx context.Context, name string) (*haven.Project, error) {
	var p haven.Project
	return &p, c.json(ctx, "POST", "/v1/projects", map[string]string{"name": name}, &p)
}

// CreateForm uploads an XForm to a project, published at once when publish is true.
func (c *Client) CreateForm(ctx context.Context, projectID int64, xform []byte, publish bool) (*haven.Form, error) {
	var f haven.Form
	return &f, c.Do(ctx, "POST", fmt.Sprintf("/v1/projects/%d/forms?publish=%v", projectID, publish), "application/xml", bytes.NewReader(xform), &f)
}

// AppUser is a new app user with its device settings.
type AppUser struct {
	haven.AppUser
	ServerURL       string `json:"serverUrl"`
	CollectSettings string `json:"collectSettings"`
}

// CreateAppUser makes a device credential in a project.
func (c *Client) CreateAppUser(ctx context.Context, projectID int64, displayName string) (*AppUser, error) {
	var au AppUser
	return &au, c.json(ctx, "POST", fmt.Sprintf("/v1/projects/%d/app-users", projectID), map[string]string{"displayName": displayName}, &au)
}

// UploadDraftAttachment uploads a media file the form's draft expects.
func (c *Client) UploadDraftAttachment(ctx context.Context, projectID int64, xmlFormID, name string, content []byte) error {
	return c.Do(ctx, "POST", fmt.Sprintf("/v1/projects/%d/forms/%s/draft/attachments/%s", projectID, xmlFormID, name), "application/octet-stream", bytes.NewReader(content), nil)
}

// PublishDraft publishes a form's draft (with version, when not empty).
func (c *Client) PublishDraft(ctx context.Context, projectID int64, xmlFormID, version string) (*haven.Form, error) {
	var f haven.Form
	path := fmt.Sprintf("/v1/projects/%d/forms/%s/draft/publish", projectID, xmlFormID)
	if version != "" {
		path += "?version=" + version
	}
	return &f, c.Do(ctx, "POST", path, "", nil, &f)
}
