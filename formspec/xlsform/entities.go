package xlsform

import (
	"strings"
)

// entity is the entities sheet's one row: the entity list a submission
// creates or updates an entity of, and how.
type entity struct {
	row                                    Row
	dataset, label, id, createIf, updateIf string
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
	for _, v := range []string{e.label, e.id, e.createIf, e.updateIf} {
		for _, m := range refPattern.FindAllStringSubmatch(v, -1) {
			if n := c.byName[strings.TrimSpace(m[1])]; n != nil && c.inRepeat(n) {
				c.errorf("entities", r.Num, "list_name", "The entity refers to ${%s}, inside a repeat: Haven does not convert entities declared in repeats yet. Refer to questions outside repeats, or convert this form with pyxform.", n.name)
				return nil
			}
		}
	}
	return e
}

func (c *converter) inRepeat(n *node) bool {
	for p := n.parent; p != nil; p = p.parent {
		if p.kind == "repeat" {
			return true
		}
	}
	return false
}

// entityElements adds the entity to meta and its binds, as pyxform does
// for the entities spec 2024.1.0.
func (c *converter) entityElements(e *entity, meta *el, binds *[]*el) {
	at := c.root
	path := c.root.path + "/meta/entity"
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
	calc := func(attr, expr, col string) {
		*binds = append(*binds, elem("bind", "nodeset", path+"/"+attr, "calculate", c.expr(expr, at, col), "readonly", "true()", "type", "string"))
	}
	if e.createIf != "" {
		calc("@create", e.createIf, "create_if")
	}
	if e.updateIf != "" {
		calc("@update", e.updateIf, "update_if")
	}
	if e.id != "" {
		id := c.expr(e.id, at, "entity_id")
		for _, v := range []string{"version", "trunkVersion", "branchId"} {
			attr := "@" + v
			if v == "version" {
				attr = "@baseVersion"
			}
			*binds = append(*binds, elem("bind", "nodeset", path+"/"+attr, "calculate", "instance('"+e.dataset+"')/root/item[name="+id+"]/__"+v, "readonly", "true()", "type", "string"))
		}
		*binds = append(*binds, elem("bind", "nodeset", path+"/@id", "readonly", "true()", "type", "string", "calculate", id))
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
