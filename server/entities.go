package server

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/haven-org/haven"
	"github.com/haven-org/haven/app"
	"github.com/labstack/echo/v4"
)

// Entity lists at Central's addresses (.../datasets), as pyodk and ruODK
// call them; OData at .../datasets/{name}.svc.

func (s *Server) entityRoutes(p *echo.Group) {
	p.GET("/datasets", s.listEntityLists)
	p.POST("/datasets", s.createEntityList)
	p.GET("/datasets/:name", s.getEntityList)
	p.PATCH("/datasets/:name", s.patchEntityList)
	p.POST("/datasets/:name/properties", s.addEntityProperty)
	p.GET("/datasets/:name/entities", s.listEntities)
	p.POST("/datasets/:name/entities", s.createEntities)
	p.GET("/datasets/:name/entities.csv", s.entitiesCSV)
	p.GET("/datasets/:name/entities/:uuid", s.getEntity)
	p.PATCH("/datasets/:name/entities/:uuid", s.patchEntity)
	p.DELETE("/datasets/:name/entities/:uuid", s.deleteEntity)
	p.GET("/datasets/:name/entities/:uuid/versions", s.entityVersions)
	p.GET("/datasets/:name/entities/:uuid/diffs", s.entityDiffs)
	p.GET("/datasets/:name/entities/:uuid/audits", s.entityAudits)
	p.GET("/datasets/:name/filters", s.entityFilters)
	p.PUT("/datasets/:name/filters/:actorId", s.setEntityFilter)
	p.GET("/datasets/:name/:rest", s.entityOData)
}

// listJSON is a list as Central answers it; the extended metadata (counts)
// only when asked with X-Extended-Metadata: true.
func listJSON(l app.EntityListInfo, extended, full bool) map[string]any {
	out := map[string]any{"name": l.Name, "projectId": l.ProjectID, "createdAt": l.CreatedAt, "approvalRequired": l.ApprovalRequired,
		"ownerOnly": false}
	if extended {
		out["entities"], out["conflicts"], out["lastEntity"] = l.Entities, l.Conflicts, l.LastEntity
	}
	if full {
		out["properties"], out["sourceForms"], out["linkedForms"] = l.Properties, l.SourceForms, l.LinkedForms
		out["labelSensitivity"] = l.LabelTier
	}
	return out
}

func extended(c echo.Context) bool { return c.Request().Header.Get("X-Extended-Metadata") == "true" }

func (s *Server) listEntityLists(c echo.Context) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	lists, err := s.app.EntityLists(c.Request().Context(), principal(c), pid)
	if err != nil {
		return err
	}
	out := make([]map[string]any, len(lists))
	for i, l := range lists {
		out[i] = listJSON(l, extended(c), false)
	}
	return c.JSON(http.StatusOK, out)
}

func (s *Server) createEntityList(c echo.Context) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	var body struct {
		Name             string
		ApprovalRequired bool
	}
	if err := bind(c, &body); err != nil {
		return err
	}
	l, err := s.app.CreateEntityList(c.Request().Context(), principal(c), pid, body.Name, body.ApprovalRequired)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, listJSON(*l, false, true))
}

func (s *Server) getEntityList(c echo.Context) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	name := param(c, "name")
	if strings.HasSuffix(name, ".svc") {
		return s.entityService(c, pid, strings.TrimSuffix(name, ".svc"), "")
	}
	l, err := s.app.EntityList(c.Request().Context(), principal(c), pid, name)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, listJSON(*l, true, true))
}

func (s *Server) patchEntityList(c echo.Context) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	var body struct{ ApprovalRequired *bool }
	if err := bind(c, &body); err != nil {
		return err
	}
	if body.ApprovalRequired == nil {
		return haven.Errorf(haven.EINVALID, "Send {\"approvalRequired\": true} or false: it is the one setting of an entity list.")
	}
	l, err := s.app.SetEntityListApproval(c.Request().Context(), principal(c), pid, param(c, "name"), *body.ApprovalRequired)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, listJSON(*l, true, true))
}

func (s *Server) addEntityProperty(c echo.Context) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	var body struct {
		Name, Purpose string
		Sensitivity   haven.Sensitivity
	}
	if err := bind(c, &body); err != nil {
		return err
	}
	err = s.app.AddEntityProperty(c.Request().Context(), principal(c), pid, param(c, "name"),
		haven.EntityProperty{Name: body.Name, Purpose: body.Purpose, Sensitivity: body.Sensitivity})
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]bool{"success": true})
}

// entityJSON is an entity as Central answers it.
func entityJSON(e *haven.Entity, data bool) map[string]any {
	v := versionJSON(e.Current, data)
	return map[string]any{"uuid": e.UUID, "createdAt": e.CreatedAt, "updatedAt": e.UpdatedAt, "deletedAt": e.DeletedAt,
		"creatorId": e.CreatorID, "conflict": e.Conflict, "currentVersion": v}
}

func versionJSON(v haven.EntityVersion, data bool) map[string]any {
	out := map[string]any{"label": v.Label, "current": v.Current, "createdAt": v.CreatedAt, "creatorId": v.CreatorID,
		"userAgent": "", "version": v.Version, "baseVersion": v.BaseVersion, "conflictingProperties": v.ConflictingProperties,
		"trunkVersion": v.TrunkVersion, "branchId": v.BranchID, "branchBaseVersion": v.BranchBaseVersion}
	if data {
		out["data"], out["dataReceived"] = v.Data, v.Received
		if v.InstanceID != "" {
			out["source"] = map[string]any{"submission": map[string]string{"instanceId": v.InstanceID}}
		} else {
			out["source"] = map[string]any{"submission": nil}
		}
	}
	return out
}

func (s *Server) listEntities(c echo.Context) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	deleted := isTrue(c.QueryParam("deleted"))
	list, err := s.app.Entities(c.Request().Context(), principal(c), pid, param(c, "name"), deleted)
	if err != nil {
		return err
	}
	out := make([]map[string]any, len(list))
	for i, e := range list {
		out[i] = entityJSON(e, false)
		if e.DeletedAt != nil {
			out[i]["currentVersion"] = nil
		}
	}
	return c.JSON(http.StatusOK, out)
}

func (s *Server) createEntities(c echo.Context) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	var body struct {
		app.EntityInput
		Entities []app.EntityInput `json:"entities"`
		Source   *struct{ Name string }
	}
	if err := bind(c, &body); err != nil {
		return err
	}
	many := body.Entities != nil
	in := body.Entities
	if !many {
		in = []app.EntityInput{body.EntityInput}
	}
	out, err := s.app.CreateEntities(c.Request().Context(), principal(c), pid, param(c, "name"), in)
	if err != nil {
		return err
	}
	if many {
		return c.JSON(http.StatusOK, map[string]bool{"success": true})
	}
	return c.JSON(http.StatusOK, entityJSON(out[0], true))
}

func (s *Server) getEntity(c echo.Context) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	e, err := s.app.Entity(c.Request().Context(), principal(c), pid, param(c, "name"), param(c, "uuid"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, entityJSON(e, true))
}

func (s *Server) patchEntity(c echo.Context) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	var body app.EntityInput
	if err := bind(c, &body); err != nil {
		return err
	}
	var base int64
	if v := c.QueryParam("baseVersion"); v != "" {
		if base, err = strconv.ParseInt(v, 10, 64); err != nil || base < 1 {
			return haven.Errorf(haven.EINVALID, "baseVersion %q is not a version number.", v)
		}
	}
	e, err := s.app.UpdateEntity(c.Request().Context(), principal(c), pid, param(c, "name"), param(c, "uuid"), body, base,
		isTrue(c.QueryParam("force")), isTrue(c.QueryParam("resolve")))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, entityJSON(e, true))
}

func (s *Server) deleteEntity(c echo.Context) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	if err := s.app.DeleteEntity(c.Request().Context(), principal(c), pid, param(c, "name"), param(c, "uuid")); err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]bool{"success": true})
}

func (s *Server) entityVersions(c echo.Context) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	vs, err := s.app.EntityVersions(c.Request().Context(), principal(c), pid, param(c, "name"), param(c, "uuid"))
	if err != nil {
		return err
	}
	out := make([]map[string]any, len(vs))
	for i, v := range vs {
		out[i] = versionJSON(v, true)
	}
	return c.JSON(http.StatusOK, out)
}

func (s *Server) entitiesCSV(c echo.Context) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	name := param(c, "name")
	b, err := s.app.EntitiesCSV(c.Request().Context(), principal(c), pid, name)
	if err != nil {
		return err
	}
	c.Response().Header().Set("Content-Disposition", attachment(name+".csv"))
	return c.Blob(http.StatusOK, "text/csv; charset=utf-8", b)
}

func (s *Server) entityFilters(c echo.Context) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	fs, err := s.app.EntityFilters(c.Request().Context(), principal(c), pid, param(c, "name"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, fs)
}

// setEntityFilter answers PUT .../datasets/{name}/filters/{actorId}
// {"property": "area", "values": ["north"]} (no values: no filter).
func (s *Server) setEntityFilter(c echo.Context) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	actor, err := pathInt(c, "actorId")
	if err != nil {
		return err
	}
	var body struct {
		Property string
		Values   []string
	}
	if err := bind(c, &body); err != nil {
		return err
	}
	f := app.EntityFilter{ActorID: actor, Property: body.Property, Values: body.Values}
	if err := s.app.SetEntityFilter(c.Request().Context(), principal(c), pid, param(c, "name"), f); err != nil {
		return err
	}
	return c.JSON(http.StatusOK, f)
}

// entityOData answers .../datasets/{name}.svc/$metadata and /Entities.
func (s *Server) entityOData(c echo.Context) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	name := param(c, "name")
	if !strings.HasSuffix(name, ".svc") {
		return haven.Errorf(haven.ENOTFOUND, "Nothing is at this address: see the API description in the README.")
	}
	return s.entityService(c, pid, strings.TrimSuffix(name, ".svc"), param(c, "rest"))
}

// entityService is the OData service of an entity list: the service
// document, $metadata, and the Entities set (Central's shape: __id,
// label, __system, then the properties the reader may see).
func (s *Server) entityService(c echo.Context, pid int64, name, rest string) error {
	ctx := c.Request().Context()
	p := principal(c)
	base := fmt.Sprintf("%s/v1/projects/%d/datasets/%s.svc", s.baseURL(c), pid, url.PathEscape(name))
	for k := range c.QueryParams() {
		if k != "$top" && k != "$skip" && k != "$count" && k != "$format" && k != "$select" && k != "$filter" {
			return haven.Errorf(haven.ENOTIMPLEMENTED, "The query option %q is not supported on entity lists; these are: $top, $skip, $count, $select, $filter.", k)
		}
	}
	switch rest {
	case "":
		if _, err := s.app.EntityList(ctx, p, pid, name); err != nil {
			return err
		}
		return c.JSON(http.StatusOK, map[string]any{"@odata.context": base + "/$metadata",
			"value": []map[string]string{{"name": "Entities", "kind": "EntitySet", "url": "Entities"}}})
	case "$metadata":
		// The properties the reader's clearance covers: the others are
		// not there for them, as with a form's fields.
		t, err := s.app.EntityTableFor(ctx, p, pid, name)
		if err != nil {
			return err
		}
		var b strings.Builder
		b.WriteString(`<?xml version="1.0" encoding="UTF-8"?>
<edmx:Edmx xmlns:edmx="http://docs.oasis-open.org/odata/ns/edmx" Version="4.0">
  <edmx:DataServices>
    <Schema xmlns="http://docs.oasis-open.org/odata/ns/edm" Namespace="org.opendatakit.user.` + xmlAttr(name) + `">
      <ComplexType Name="metadata">
        <Property Name="createdAt" Type="Edm.DateTimeOffset"/>
        <Property Name="creatorId" Type="Edm.String"/>
        <Property Name="updates" Type="Edm.Int64"/>
        <Property Name="updatedAt" Type="Edm.DateTimeOffset"/>
        <Property Name="version" Type="Edm.Int64"/>
        <Property Name="conflict" Type="Edm.String"/>
      </ComplexType>
      <EntityType Name="Entities">
        <Key><PropertyRef Name="__id"/></Key>
        <Property Name="__id" Type="Edm.String"/>
        <Property Name="label" Type="Edm.String"/>
        <Property Name="__system" Type="org.opendatakit.user.` + xmlAttr(name) + `.metadata"/>
`)
		for _, pr := range t.List.Properties {
			if slices.Contains(t.Columns, pr.Name) {
				fmt.Fprintf(&b, "        <Property Name=\"%s\" Type=\"Edm.String\"/>\n", xmlAttr(pr.ODataName))
			}
		}
		b.WriteString(`      </EntityType>
      <EntityContainer Name="` + xmlAttr(name) + `">
        <EntitySet Name="Entities" EntityType="org.opendatakit.user.` + xmlAttr(name) + `.Entities"/>
      </EntityContainer>
    </Schema>
  </edmx:DataServices>
</edmx:Edmx>`)
		return c.Blob(http.StatusOK, "application/xml", []byte(b.String()))
	case "Entities":
	default:
		return haven.Errorf(haven.ENOTFOUND, "This entity list's OData service has one entity set, Entities.")
	}
	t, err := s.app.EntityTableFor(ctx, p, pid, name)
	if err != nil {
		return err
	}
	if !p.Can(haven.ActionSubmissionRead, pid) {
		_, err := s.app.Entities(ctx, p, pid, name, false) // the refusal, as every read path gives it
		return err
	}
	list := t.Entities
	if f := c.QueryParam("$filter"); f != "" {
		if list, err = s.app.FilterEntities(f, list); err != nil {
			return err
		}
	}
	skip, top := 0, len(list)
	if v := c.QueryParam("$skip"); v != "" {
		if skip, err = strconv.Atoi(v); err != nil || skip < 0 {
			return haven.Errorf(haven.EINVALID, "$skip must be a whole number.")
		}
	}
	if v := c.QueryParam("$top"); v != "" {
		if top, err = strconv.Atoi(v); err != nil || top < 0 {
			return haven.Errorf(haven.EINVALID, "$top must be a whole number.")
		}
	}
	var sel map[string]bool
	if v := c.QueryParam("$select"); v != "" {
		sel = map[string]bool{}
		for _, f := range strings.Split(v, ",") {
			sel[strings.TrimSpace(f)] = true
		}
	}
	rows := []map[string]any{}
	for i := skip; i < len(list) && len(rows) < top; i++ {
		e := list[i]
		var label any = e.Current.Label
		if !t.LabelSeen {
			label = nil
		}
		row := map[string]any{"__id": e.UUID, "label": label, "__system": map[string]any{
			"createdAt": e.CreatedAt.Format(time.RFC3339Nano), "creatorId": strconv.FormatInt(e.CreatorID, 10), "updates": e.Version - 1,
			"updatedAt": e.UpdatedAt, "version": e.Version, "conflict": e.Conflict}}
		for _, pr := range t.List.Properties {
			if !slices.Contains(t.Columns, pr.Name) {
				continue
			}
			if v, ok := e.Current.Data[pr.Name]; ok {
				row[pr.ODataName] = v
			} else {
				row[pr.ODataName] = nil
			}
		}
		if sel != nil {
			for k := range row {
				if !sel[k] {
					delete(row, k)
				}
			}
		}
		rows = append(rows, row)
	}
	out := map[string]any{"@odata.context": base + "/$metadata#Entities", "value": rows}
	if omitted := append(slices.Clone(t.Withheld), labelWithheld(t)...); len(omitted) > 0 {
		out["@haven.omittedFields"] = omitted
	}
	if isTrue(c.QueryParam("$count")) {
		out["@odata.count"] = len(list)
	}
	if skip+len(rows) < len(list) && c.QueryParam("$top") == "" {
		out["@odata.nextLink"] = fmt.Sprintf("%s/Entities?$skip=%d", base, skip+len(rows))
	}
	return c.JSON(http.StatusOK, out)
}

func xmlAttr(s string) string {
	r := strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;")
	return r.Replace(s)
}

func labelWithheld(t *app.EntityTable) []string {
	if t.LabelSeen {
		return nil
	}
	return []string{"label"}
}

func (s *Server) entityDiffs(c echo.Context) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	d, err := s.app.EntityDiffs(c.Request().Context(), principal(c), pid, param(c, "name"), param(c, "uuid"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, d)
}

func (s *Server) entityAudits(c echo.Context) error {
	pid, err := projectID(c)
	if err != nil {
		return err
	}
	a, err := s.app.EntityAudits(c.Request().Context(), principal(c), pid, param(c, "name"), param(c, "uuid"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, a)
}
