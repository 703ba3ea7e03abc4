package xlsform

import (
	"slices"
	"strings"
)

// entity is one row of the entities sheet: the entity list a submission
// creates or updates an entity of, and how.
type entity struct {
	row                                    Row
	dataset, label, id, createIf, updateIf string
	scope                                  *node // the root, or the repeat each of whose items makes an entity
	metaAt                                 *node // where its meta block goes: the scope, or a group in it
}

// readEntities reads the entities sheet and places each entity in the form
// as pyxform 4.5 does (entities spec 2025.1.0 for more than one, or for one
// made in a repeat). nil after an error.
func (c *converter) readEntities() []*entity {
	sh := c.wb.sheet("entities")
	if sh == nil || len(sh.Rows) == 0 {
		return nil
	}
	var out []*entity
	seen := map[string]int{}
	for _, r := range sh.Rows {
		e := c.readEntity(r)
		if e == nil {
			return nil
		}
		if first, ok := seen[e.dataset]; ok {
			c.errorf("entities", r.Num, "list_name", "The entity list %q is declared twice (rows %d and %d): declare each list once.", e.dataset, first, r.Num)
			return nil
		}
		seen[e.dataset] = r.Num
		out = append(out, e)
	}
	if !c.placeEntities(out) {
		return nil
	}
	return out
}

// entityColumns are the entities sheet's columns (pyxform's EntityColumns;
// list_name is dataset's later name).
var entityColumns = map[string]bool{"list_name": true, "dataset": true, "entity_id": true, "create_if": true, "update_if": true, "repeat": true, "label": true}

func (c *converter) readEntity(r Row) *entity {
	var extra []string
	for _, h := range sortedKeys(r.Cells) {
		base, _, _ := strings.Cut(h, "::")
		if !entityColumns[base] && r.Get(h) != "" {
			extra = append(extra, "'"+h+"'")
		}
	}
	if len(extra) > 0 {
		c.errorf("entities", 1, "", "The entities sheet has column(s) Haven does not know: %s. Check their spelling, or remove them (the columns are list_name, label, entity_id, create_if, update_if and repeat).", strings.Join(extra, ", "))
		return nil
	}
	dataset := r.Get("list_name")
	if dataset == "" {
		dataset = r.Get("dataset") // the column's older name
	}
	e := &entity{row: r, dataset: dataset, label: r.Get("label"), id: r.Get("entity_id"), createIf: r.Get("create_if"), updateIf: r.Get("update_if")}
	switch {
	case e.dataset == "":
		c.errorf("entities", r.Num, "list_name", "The entity needs a list_name: the entity list it belongs to.")
		return nil
	case strings.HasPrefix(e.dataset, "__"):
		c.errorf("entities", r.Num, "list_name", "The list_name %q may not start with two underscores.", e.dataset)
		return nil
	case strings.Contains(e.dataset, "."):
		c.errorf("entities", r.Num, "list_name", "The list_name %q may not contain a period.", e.dataset)
		return nil
	case !xmlName.MatchString(e.dataset):
		c.errorf("entities", r.Num, "list_name", "The list_name %q cannot be used: names begin with a letter or underscore, then hold only letters, digits, underscores, hyphens or periods.", e.dataset)
		return nil
	case e.id == "" && e.label == "":
		c.errorf("entities", r.Num, "label", "An entity that is created needs a label: give the label column a value, such as ${name}.")
		return nil
	case e.id == "" && e.updateIf != "":
		c.errorf("entities", r.Num, "update_if", "An entity that is updated needs an entity_id: say which entity with the entity_id column.")
		return nil
	case e.id != "" && e.createIf != "" && e.updateIf == "":
		c.errorf("entities", r.Num, "update_if", "The entity list %q has create_if and entity_id, which upserts (creates or updates) an entity, but no update_if: add an update_if, or remove entity_id to only create entities.", e.dataset)
		return nil
	}
	return e
}

// entityRef ties an entity to a place in the form: a question saved to it
// (prop is the property) or one its expressions refer to.
type entityRef struct {
	q    *node
	prop string
}

// Container paths, as pyxform measures them: a container's boundary is the
// nearest repeat at or above it (or the root).
func boundary(n *node) *node {
	for ; n.parent != nil && n.kind != "repeat"; n = n.parent {
	}
	return n
}

func repeatsAbove(n *node) int { // repeats from the root down to n, n included
	k := 0
	for ; n.parent != nil; n = n.parent {
		if n.kind == "repeat" {
			k++
		}
	}
	return k
}

func belowBoundary(n *node) int { // containers between n's boundary and n, n included
	k := 0
	for ; n.parent != nil && n.kind != "repeat"; n = n.parent {
		k++
	}
	return k
}

func depthOf(n *node) int {
	d := 1
	for ; n.parent != nil; n = n.parent {
		d++
	}
	return d
}

// ancestorAt is n's ancestor (or n) d containers deep, the root being 1.
func ancestorAt(n *node, d int) *node {
	for k := depthOf(n); k > d; k-- {
		n = n.parent
	}
	return n
}

// placement is where references ask for one entity to go.
type placement struct {
	e         *entity
	scope     *node   // the boundary the entity belongs to
	requested *node   // the container it would best go in
	lineages  []*node // containers of the questions saved to it
}

// request works out, from an entity's references in survey order, the
// scope and the container pyxform asks for: questions saved to it decide
// (the container holding them), else the deepest reference. Mixing scopes
// that do not nest is an error.
func (c *converter) request(e *entity, refs []entityRef) (placement, bool) {
	var deepScope, deepScopeAt *node
	var deepContainer, deepSave *entityRef
	var lineages []*node
	for i := range refs {
		r := &refs[i]
		at := r.q.parent
		b := boundary(at)
		if deepScope == nil || repeatsAbove(b) > repeatsAbove(deepScope) {
			if b != deepScope {
				deepContainer = r
				if r.prop != "" {
					deepSave = r
				}
			}
			deepScope, deepScopeAt = b, at
		}
		if deepContainer == nil || b == deepScope && belowBoundary(at) > belowBoundary(deepContainer.q.parent) {
			deepContainer = r
		}
		if r.prop != "" {
			if !slices.Contains(lineages, at) {
				lineages = append(lineages, at)
			}
			if deepSave == nil || b == deepScope && belowBoundary(at) > belowBoundary(deepSave.q.parent) {
				deepSave = r
			}
		}
	}
	requested := deepContainer.q.parent
	if deepSave != nil {
		requested = deepSave.q.parent
	}
	if len(lineages) > 0 {
		minLen := depthOf(lineages[0])
		for _, l := range lineages[1:] {
			minLen = min(minLen, depthOf(l))
		}
		common := ancestorAt(lineages[0], minLen)
		if len(lineages) > 1 {
			// pyxform compares the paths position by position, by name.
			for i := 1; i <= minLen; i++ {
				target := ancestorAt(lineages[0], i)
				for _, l := range lineages {
					if o := ancestorAt(l, i); o.name != target.name || o.kind != target.kind {
						common = ancestorAt(lineages[0], i-1)
						break
					}
				}
			}
			// The deepest scope, or the deepest container in it.
			a := boundary(deepSave.q.parent)
			requested = a
			if repeatsAbove(common) > repeatsAbove(a) || repeatsAbove(common) == repeatsAbove(a) && belowBoundary(common) > belowBoundary(a) {
				requested = common
			}
		} else {
			requested = common
		}
	}
	reqScope := boundary(requested)
	for _, r := range refs {
		b := boundary(r.q.parent)
		if depthOf(b) > depthOf(deepScope) || ancestorAt(deepScope, depthOf(b)) != b || r.prop != "" && b != reqScope {
			if r.prop != "" {
				c.errorf("survey", r.q.row.Num, "save_to", "This question is saved to the entity list %q from %s, but its other references are in %s: an entity is made once per item of one repeat. Save to it from questions in the same repeat, or copy the value there with a calculate.", e.dataset, r.q.parent.path, deepScopeAt.path)
			} else {
				c.errorf("entities", e.row.Num, "label", "The entity list %q refers to ${%s} in %s, which is not compatible with its other references in %s: an entity is made once per item of one repeat. Copy the value into that repeat with a calculate and refer to it.", e.dataset, r.q.name, r.q.parent.path, deepScopeAt.path)
			}
			return placement{}, false
		}
	}
	return placement{e: e, scope: deepScope, requested: requested, lineages: lineages}, true
}

// placeEntities sets each entity's scope and meta container as pyxform's
// allocation does: one entity per container; each as deep as its
// references ask, moving up within its scope when the container is taken,
// and never into containers between its saved questions and its place.
func (c *converter) placeEntities(ents []*entity) bool {
	byList := map[string]*entity{}
	for _, e := range ents {
		byList[e.dataset] = e
	}
	refs := map[*entity][]entityRef{}
	var order []*entity // by first reference, as pyxform groups them
	note := func(e *entity, r entityRef) {
		if _, ok := refs[e]; !ok {
			order = append(order, e)
		}
		refs[e] = append(refs[e], r)
	}
	vars := map[string][]*entity{} // question name -> entities whose expressions refer to it
	for _, e := range ents {
		seen := map[string]bool{}
		for _, v := range []string{e.id, e.createIf, e.updateIf, e.label} {
			for _, m := range refPattern.FindAllStringSubmatch(v, -1) {
				if name := strings.TrimSpace(m[1]); !seen[name] {
					seen[name] = true
					vars[name] = append(vars[name], e)
				}
			}
		}
	}
	ok := true
	var walk func(n *node)
	walk = func(n *node) {
		for _, q := range n.children {
			if q.kind == "question" {
				if v := strings.TrimSpace(q.row.Get("save_to")); v != "" {
					if e, prop := c.savedTo(q, ents, byList); e != nil {
						for _, r := range refs[e] {
							if r.prop == prop {
								c.errorf("survey", q.row.Num, "save_to", "The entity property %q of %q is already saved from row %d: save each property from one question.", prop, e.dataset, r.q.row.Num)
								ok = false
							}
						}
						note(e, entityRef{q: q, prop: prop})
					} else {
						ok = false
					}
				}
				for _, e := range vars[q.name] {
					note(e, entityRef{q: q})
				}
			}
			walk(q)
		}
	}
	walk(c.root)
	if !ok {
		return false
	}
	// Requests grouped by scope, scopes in order of first appearance.
	var scopes []*node
	byScope := map[*node][]placement{}
	add := func(p placement) {
		if _, ok := byScope[p.scope]; !ok {
			scopes = append(scopes, p.scope)
		}
		byScope[p.scope] = append(byScope[p.scope], p)
	}
	for _, e := range order {
		p, ok := c.request(e, refs[e])
		if !ok {
			return false
		}
		add(p)
	}
	for _, e := range ents {
		if _, ok := refs[e]; !ok {
			add(placement{e: e, scope: c.root, requested: c.root})
		}
	}
	if len(scopes) == 1 && scopes[0] == c.root && len(byScope[c.root]) == 1 {
		e := byScope[c.root][0].e
		e.scope, e.metaAt = c.root, c.root
		return true
	}
	taken := map[*node]*entity{}    // containers holding an entity
	reserved := map[*node]*entity{} // containers between an entity's saved questions and its place
	for _, scope := range scopes {
		reqs := byScope[scope]
		slices.SortStableFunc(reqs, func(a, b placement) int { return a.e.row.Num - b.e.row.Num })
		for _, req := range reqs {
			var conflict *entity
			for d := depthOf(req.requested); d >= depthOf(scope); d-- {
				at := ancestorAt(req.requested, d)
				conflict = taken[at]
				if conflict == nil {
					conflict = reserved[at]
				}
				if conflict == nil {
					taken[at], reserved[at] = req.e, req.e
					for _, l := range req.lineages {
						for n := l; n != nil && depthOf(n) >= d; n = n.parent {
							reserved[n] = req.e
						}
					}
					req.e.metaAt, req.e.scope = at, boundary(at)
					break
				}
				if len(req.lineages) > 0 && reserved[req.lineages[0]] != nil {
					conflict = reserved[req.lineages[0]]
					break // its saved questions sit where another entity is
				}
			}
			if conflict != nil {
				c.errorf("entities", req.e.row.Num, "list_name", "The entity list %q has no container of its own in %s: the entity of row %d takes the one it needs. Put its questions in a group of their own (one entity per group or repeat).", req.e.dataset, scope.path, conflict.row.Num)
				return false
			}
		}
	}
	return true
}

// savedTo finds the entity a question's save_to names (LIST#PROPERTY, or
// PROPERTY when the form has one entity) and the property.
func (c *converter) savedTo(q *node, ents []*entity, byList map[string]*entity) (*entity, string) {
	v := strings.TrimSpace(q.row.Get("save_to"))
	bad := func(format string, args ...any) (*entity, string) {
		c.errorf("survey", q.row.Num, "save_to", format, args...)
		return nil, ""
	}
	if strings.Count(v, "#") > 1 {
		return bad("The save_to value %q has more than one '#': write PROPERTY, or LIST#PROPERTY.", v)
	}
	list, prop, named := strings.Cut(v, "#")
	if !named {
		if len(ents) > 1 {
			return bad("The form declares %d entity lists, so save_to must say which: write LIST#%s.", len(ents), v)
		}
		if c.checkProperty(q, v) == "" {
			return nil, ""
		}
		return ents[0], v
	}
	e := byList[list]
	if e == nil {
		names := make([]string, len(ents))
		for i, x := range ents {
			names[i] = x.dataset
		}
		return bad("The save_to value %q names the entity list %q, which is not on the entities sheet (it declares %s): check the spelling.", v, list, strings.Join(names, ", "))
	}
	if c.checkProperty(q, prop) == "" {
		return nil, ""
	}
	return e, prop
}

// entityElements adds the entity to meta and its binds, as pyxform does
// for the entities spec 2024.1.0.
func (c *converter) entityElements(e *entity, meta *el, binds *[]*el) {
	path := e.metaAt.path + "/meta/entity"
	row := e.row.Num
	expr := func(s, context, col string, filter bool) string { return c.exprFrom(s, context, row, col, filter) }
	ent := elem("entity", "dataset", e.dataset)
	if e.id == "" || e.createIf != "" {
		ent.attr("create", "1")
	}
	if e.id != "" {
		ent.attr("update", "1")
		ent.attr("baseVersion", "")
		ent.attr("trunkVersion", "")
		ent.attr("branchId", "")
	}
	ent.attr("id", "")
	if e.label != "" {
		ent.add(elem("label"))
	}
	meta.add(ent)
	calc := func(attr, x, col string) {
		*binds = append(*binds, elem("bind", "nodeset", path+"/"+attr, "calculate", expr(x, path+"/"+attr, col, false), "readonly", "true()", "type", "string"))
	}
	if e.createIf != "" {
		calc("@create", e.createIf, "create_if")
	}
	if e.updateIf != "" {
		calc("@update", e.updateIf, "update_if")
	}
	if e.id != "" {
		for _, v := range []string{"version", "trunkVersion", "branchId"} {
			attr := "@" + v
			if v == "version" {
				attr = "@baseVersion"
			}
			id := expr(e.id, path+"/"+attr, "entity_id", true)
			*binds = append(*binds, elem("bind", "nodeset", path+"/"+attr, "calculate", "instance('"+e.dataset+"')/root/item[name="+id+"]/__"+v, "readonly", "true()", "type", "string"))
		}
		*binds = append(*binds, elem("bind", "nodeset", path+"/@id", "readonly", "true()", "type", "string", "calculate", expr(e.id, path+"/@id", "entity_id", false)))
	} else {
		*binds = append(*binds, elem("bind", "nodeset", path+"/@id", "readonly", "true()", "type", "string"),
			elem("setvalue", "ref", path+"/@id", "event", "odk-instance-first-load", "value", "uuid()"))
	}
	if e.label != "" {
		calc("label", e.label, "label")
	}
}

// checkProperty checks an entity property's name; "" after reporting.
func (c *converter) checkProperty(q *node, prop string) string {
	bad := func(format string, args ...any) string {
		c.errorf("survey", q.row.Num, "save_to", format, args...)
		return ""
	}
	switch {
	case strings.EqualFold(prop, "name") || strings.EqualFold(prop, "label"):
		return bad("The entity property %q is reserved (name and label, in any case): choose another name.", prop)
	case strings.HasPrefix(prop, "__"):
		return bad("The entity property %q may not begin with two underscores.", prop)
	case !xmlName.MatchString(prop):
		return bad("The entity property %q cannot be used: names begin with a letter or underscore, then hold only letters, digits, underscores, hyphens or periods.", prop)
	}
	return prop
}

// saveTo gives the entity property a question saves to, for its bind: the
// value without its list, if any ("" when readEntities refused the form's
// entities, which reported why).
func (c *converter) saveTo(n *node) string {
	v := strings.TrimSpace(n.row.Get("save_to"))
	if len(c.entities) == 0 {
		if sh := c.wb.sheet("entities"); sh == nil || len(sh.Rows) == 0 {
			c.errorf("survey", n.row.Num, "save_to", "save_to saves an answer to an entity property, but the form declares no entity: add an entities sheet with the entity list, or remove the save_to value.")
		}
		return ""
	}
	if _, p, ok := strings.Cut(v, "#"); ok {
		return p
	}
	return v
}
