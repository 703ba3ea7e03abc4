package xlsform

import (
	"strings"
)

// entity is the entities sheet's one row: the entity list a submission
// creates or updates an entity of, and how.
type entity struct {
	row                                    Row
	dataset, label, id, createIf, updateIf string
	scope                                  *node // the root, or the repeat each of whose items makes an entity
	metaAt                                 *node // where its meta block goes: the scope, or a group in it
}

// readEntities reads the entities sheet (one row, as pyxform takes it).
// Entities declared inside repeats (pyxform's 2025.1.0 spec) are refused
// for now with a clear message, rather than left out unnoticed.
func (c *converter) readEntities() *entity {
	sh := c.wb.sheet("entities")
	if sh == nil || len(sh.Rows) == 0 {
		return nil
	}
	if len(sh.Rows) > 1 {
		c.errorf("entities", sh.Rows[1].Num, "list_name", "Haven converts one entity per form for now: keep one row on the entities sheet, or convert this form with pyxform.")
		return nil
	}
	r := sh.Rows[0]
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
	if e.scope = c.entityScope(e); e.scope == nil {
		return nil
	}
	e.metaAt = c.entityMetaAt(e)
	return e
}

// entityMetaAt places a repeat's entity as pyxform does: in the container
// (the repeat, or a group in it) holding every question saved to it; with
// none, in the container of the questions it refers to, the deepest when
// they are nested in one another, the one holding them all when they sit
// side by side.
func (c *converter) entityMetaAt(e *entity) *node {
	if e.scope == c.root {
		return c.root
	}
	var best *node
	above := func(a, b *node) bool { return a == b || strings.HasPrefix(b.path, a.path+"/") } // a is b or holds it
	consider := func(n *node) {
		if n == nil || c.nearestRepeat(n) != e.scope {
			return
		}
		k := n.parent
		switch {
		case best == nil || above(best, k):
			best = k
		case above(k, best):
		default:
			for !above(best, k) {
				best = best.parent
			}
		}
	}
	// Questions saved to the entity decide where it goes: the container
	// holding them all. Without any, the references do, the deepest.
	var saved []*node
	var walk func(n *node)
	walk = func(n *node) {
		for _, ch := range n.children {
			if ch.kind == "question" && ch.row.Get("save_to") != "" {
				saved = append(saved, ch)
			}
			walk(ch)
		}
	}
	walk(e.scope)
	if len(saved) > 0 {
		best = saved[0].parent
		for _, q := range saved[1:] {
			for !above(best, q.parent) {
				best = best.parent
			}
		}
		return best
	}
	for _, v := range []string{e.label, e.id, e.createIf, e.updateIf} {
		for _, m := range refPattern.FindAllStringSubmatch(v, -1) {
			consider(c.byName[strings.TrimSpace(m[1])])
		}
	}
	if best == nil {
		return e.scope
	}
	return best
}

// nearestRepeat returns the repeat n is in, or the root.
func (c *converter) nearestRepeat(n *node) *node {
	for p := n.parent; p != nil; p = p.parent {
		if p.kind == "repeat" {
			return p
		}
	}
	return c.root
}

// entityScope finds where the entity is made (entities spec 2025.1.0): in
// the repeat holding the questions saved to it, or the deepest repeat its
// expressions refer into; at the root when neither is in a repeat. Every
// other reference must be in that scope or above it. nil after an error.
func (c *converter) entityScope(e *entity) *node {
	var saveScope *node
	var saveAt *node
	var bad bool
	var walk func(n *node)
	walk = func(n *node) {
		for _, ch := range n.children {
			if ch.kind == "question" && ch.row.Get("save_to") != "" {
				s := c.nearestRepeat(ch)
				if saveScope != nil && s != saveScope && !bad {
					bad = true
					c.errorf("survey", ch.row.Num, "save_to", "Questions saved to the entity list %q sit in different repeats (%s and %s): an entity is made once per item of one repeat. Move them into the same repeat, or copy the value there with a calculate and save that.", e.dataset, saveScope.path, s.path)
				}
				if saveScope == nil {
					saveScope, saveAt = s, ch
				}
			}
			walk(ch)
		}
	}
	walk(c.root)
	if bad {
		return nil
	}
	scope := c.root
	if saveScope != nil {
		scope = saveScope
	}
	within := func(a, b *node) bool { return a == b || strings.HasPrefix(b.path, a.path+"/") } // a is b or above it
	for _, v := range []string{e.label, e.id, e.createIf, e.updateIf} {
		for _, m := range refPattern.FindAllStringSubmatch(v, -1) {
			n := c.byName[strings.TrimSpace(m[1])]
			if n == nil {
				continue // reported when the expression is written
			}
			s := c.nearestRepeat(n)
			switch {
			case within(s, scope):
			case within(scope, s) && (saveScope == nil || scope != saveScope):
				scope = s // deeper: the entity moves down with its references
			default:
				at, row := scope.path, e.row.Num
				if saveAt != nil {
					row = saveAt.row.Num
				}
				c.errorf("entities", row, "list_name", "The entity list %q refers to ${%s} in %s, which is not compatible with its other references in %s: an entity is made once per item of one repeat. Copy the value into that repeat with a calculate and refer to it.", e.dataset, n.name, s.path, at)
				return nil
			}
		}
	}
	return scope
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

// saveTo checks a question's save_to value against the form's entity and
// returns the entity property it names ("" after reporting a mistake). A
// value may name the list too, as LIST#PROPERTY.
func (c *converter) saveTo(n *node, e *entity) string {
	v := strings.TrimSpace(n.row.Get("save_to"))
	bad := func(format string, args ...any) string {
		c.errorf("survey", n.row.Num, "save_to", format, args...)
		return ""
	}
	if e == nil {
		if sh := c.wb.sheet("entities"); sh == nil || len(sh.Rows) == 0 {
			return bad("save_to saves an answer to an entity property, but the form declares no entity: add an entities sheet with the entity list, or remove the save_to value.")
		}
		return "" // the entities sheet's mistake is reported already
	}
	if strings.Count(v, "#") > 1 {
		return bad("The save_to value %q has more than one '#': write PROPERTY, or LIST#PROPERTY.", v)
	}
	prop := v
	if list, p, ok := strings.Cut(v, "#"); ok {
		if list != e.dataset {
			return bad("The save_to value %q names the entity list %q, which is not on the entities sheet (it declares %q): check the spelling.", v, list, e.dataset)
		}
		prop = p
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
