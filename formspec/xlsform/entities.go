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
	case e.id == "" && e.label == "":
		c.errorf("entities", r.Num, "label", "An entity that is created needs a label: give the label column a value, such as ${name}.")
		return nil
	case e.id == "" && e.updateIf != "":
		c.errorf("entities", r.Num, "update_if", "An entity that is updated needs an entity_id: say which entity with the entity_id column.")
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
