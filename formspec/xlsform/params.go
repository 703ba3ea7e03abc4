package xlsform

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
)

// acceptedParams lists the parameters each question type takes.
var acceptedParams = map[string][]string{
	"range":               {"start", "end", "step", "tick_interval", "placeholder", "tick_labelset"},
	"geopoint":            {"capture-accuracy", "warning-accuracy", "allow-mock-accuracy", "reference-geometry"},
	"geotrace":            {"allow-mock-accuracy", "incremental", "reference-geometry"},
	"geoshape":            {"allow-mock-accuracy", "incremental", "reference-geometry"},
	"image":               {"max-pixels", "app"},
	"audio":               {"quality"},
	"background-audio":    {"quality"},
	"text":                {"rows"},
	"select_one":          {"randomize", "seed", "value", "label"},
	"select_multiple":     {"randomize", "seed", "value", "label"},
	"rank":                {"randomize", "seed"},
	"select_one_external": {"randomize", "seed"},
	"audit":               {"location-priority", "location-min-interval", "location-max-age", "track-changes", "track-changes-reasons", "identify-user"},
}

// parseParams reads the parameters column: key=value pairs separated by
// spaces, commas or semicolons. It reports what is wrong, pyxform's way.
func (c *converter) parseParams(n *node) (map[string]string, bool) {
	raw := n.row.Get("parameters")
	out := map[string]string{}
	if raw == "" {
		return out, true
	}
	bad := func(msg string) (map[string]string, bool) {
		c.errorf("survey", n.row.Num, "parameters", "The parameters value is invalid. %s", msg)
		return nil, false
	}
	fields := strings.FieldsFunc(raw, func(r rune) bool { return r == ' ' || r == ',' || r == ';' || r == '\t' })
	for _, f := range fields {
		k, v, ok := strings.Cut(f, "=")
		if !ok || strings.TrimSpace(k) == "" {
			return bad("Parameters must be in the form of 'key1=value1 key2=value2'.")
		}
		out[strings.ToLower(strings.TrimSpace(k))] = strings.TrimSpace(v)
	}
	accepted := acceptedParams[n.typ]
	if len(accepted) == 0 {
		// pyxform ignores parameters on types that take none; say so.
		c.warnf("survey", n.row.Num, "parameters", "%s questions take no parameters: %q is ignored.", n.typ, raw)
		return map[string]string{}, true
	}
	var invalid []string
	for k := range out {
		found := false
		for _, a := range accepted {
			found = found || a == k
		}
		if !found {
			invalid = append(invalid, k)
		}
	}
	if len(invalid) > 0 {
		sort.Strings(invalid)
		return bad("The accepted parameter keys for this question type are '" + strings.Join(accepted, ", ") + "'. The following are invalid parameter key(s): '" + strings.Join(invalid, ", ") + "'.")
	}
	for _, k := range []string{"max-pixels", "rows"} {
		if _, ok := out[k]; ok {
			if _, err := strconv.Atoi(out[k]); err != nil {
				return bad("Parameter " + k + " must have an integer value.")
			}
		}
	}
	if q, ok := out["quality"]; ok {
		valid := map[string]bool{"normal": true, "low": true, "voice-only": true}
		if n.typ == "audio" {
			valid["external"] = true
		}
		if !valid[q] {
			return bad("Invalid value for quality: use normal, low or voice-only.")
		}
	}
	if r, ok := out["randomize"]; ok {
		out["randomize"] = strings.ToLower(r)
	}
	if r, ok := out["randomize"]; ok && r != "true" && r != "false" {
		return bad("randomize must be set to true or false: '" + r + "' is an invalid value.")
	}
	if seed, ok := out["seed"]; ok {
		if _, has := out["randomize"]; !has {
			return bad("Parameters must include randomize=true to use a seed.")
		}
		// A number, or one ${reference} and nothing else.
		if _, err := strconv.ParseFloat(seed, 64); err != nil && refPattern.FindString(seed) != seed {
			return bad("seed value must be a number or a reference to another field.")
		}
	}
	if check := paramChecks[n.typ]; check != nil {
		if msg, whole := check(c, n, out); msg != "" {
			if !whole {
				return bad(msg)
			}
			c.errorf("survey", n.row.Num, "parameters", "%s", msg)
			return nil, false
		}
	}
	return out, true
}

// paramChecks check the parameters of a question type beyond their keys:
// each answers what is wrong ("" when nothing is), and whether that is the
// whole message or follows "The parameters value is invalid."
var paramChecks = map[string]func(c *converter, n *node, out map[string]string) (string, bool){
	"range":           checkRangeParams,
	"audit":           checkAuditParams,
	"geopoint":        checkGeopointParams,
	"geotrace":        checkGeoParams,
	"image":           checkImageParams,
	"geoshape":        checkGeoParams,
	"select_one":      checkSelectParams,
	"select_multiple": checkSelectParams,
}

// paramNumber reads a numeric parameter.
func paramNumber(out map[string]string, k string) (float64, bool) {
	f, err := strconv.ParseFloat(out[k], 64)
	return f, err == nil
}

func fail(msg string) (string, bool) { return msg, false }

// checkRangeParams checks a range's start, end, step, ticks and placeholder.
func checkRangeParams(c *converter, n *node, out map[string]string) (string, bool) {
	number := func(k string) (float64, bool) { return paramNumber(out, k) }
	vals := map[string]float64{"start": 1, "end": 10, "step": 1}
	for _, k := range []string{"start", "end", "step", "tick_interval", "placeholder"} {
		if _, ok := out[k]; !ok {
			continue
		}
		f, ok := number(k)
		if !ok {
			return fail("For the 'range' question type, the parameter '" + k + "' must be a number.")
		}
		vals[k] = f
	}
	if _, ok := out["step"]; ok && vals["step"] == 0 {
		return fail("For the 'range' question type, the parameter 'step' must not be '0' (zero).")
	}
	span := vals["end"] - vals["start"]
	if span < 0 {
		span = -span
	}
	for _, k := range []string{"step", "tick_interval"} {
		if _, ok := out[k]; ok && vals[k] > span {
			return fail("For the 'range' question type, the parameter '" + k + "' must not be larger than the range (the difference between 'start' and 'end').")
		}
	}
	_, ti := out["tick_interval"]
	_, ph := out["placeholder"]
	_, tl := out["tick_labelset"]
	plain := true // only vertical and no-ticks, in any order
	for _, a := range strings.Fields(n.row.Get("appearance")) {
		plain = plain && (a == "vertical" || a == "no-ticks")
	}
	if !plain {
		if ti || ph || tl {
			return fail("For the 'range' question type, the parameters 'tick_interval', 'placeholder', and 'tick_labelset' are only supported for the appearances 'vertical', 'no-ticks', 'vertical no-ticks', and the default (empty) horizontal.")
		}
	}
	if ti && vals["tick_interval"] == 0 {
		return fail("For the 'range' question type, the parameter 'tick_interval' must not be '0' (zero).")
	}
	// Ticks and the placeholder fall on the range's steps.
	if ti && !onStep(vals["tick_interval"], vals["step"]) {
		return fail("For the 'range' question type, the parameter 'tick_interval' must be a multiple of 'step'.")
	}
	if ph && !onStep(vals["placeholder"]-vals["start"], vals["step"]) {
		return fail("For the 'range' question type, the parameter 'placeholder' must be a multiple of 'step' from 'start'.")
	}
	lo, hi := min(vals["start"], vals["end"]), max(vals["start"], vals["end"])
	if ph && (vals["placeholder"] < lo || vals["placeholder"] > hi) {
		return fail("For the 'range' question type, the parameter 'placeholder' must be between the 'start' and 'end' values, inclusive.")
	}
	if tl {
		list, ok := c.choices[out["tick_labelset"]]
		if !ok {
			return fail("For the 'range' question type, the parameter 'tick_labelset' must name a choice list.")
		}
		// Ticks fall on the range's steps (its tick_interval's when it
		// has one); with no-ticks only the two ends are labelled.
		interval, by := vals["step"], "step"
		if ti {
			interval, by = vals["tick_interval"], "tick_interval"
		}
		noTicks := strings.Contains(n.row.Get("appearance"), "no-ticks")
		for _, r := range list {
			v, err := strconv.ParseFloat(r.Get("name"), 64)
			if err != nil || math.IsInf(v, 0) || math.IsNaN(v) {
				return fail(fmt.Sprintf("For the 'range' question type, the parameter 'tick_labelset' choice values must all be numbers: %q in list %q is not.", r.Get("name"), out["tick_labelset"]))
			}
			switch {
			case v < lo || v > hi:
				return fail(fmt.Sprintf("For the 'range' question type, the parameter 'tick_labelset' choices must be between the 'start' and 'end' values, inclusive: %s is not.", r.Get("name")))
			case noTicks:
				if v != vals["start"] && v != vals["end"] {
					return fail(fmt.Sprintf("For the 'range' question type, the parameter 'tick_labelset' choice list values may only match the range 'start' and 'end' values when the 'appearance' is 'no-ticks': %s is neither.", r.Get("name")))
				}
			case !onStep(v-vals["start"], interval):
				return fail(fmt.Sprintf("For the 'range' question type, the parameter 'tick_labelset' choices' values must be equal to the start of the range plus a multiple of '%s': %s is not.", by, r.Get("name")))
			}
		}
	}
	return "", false
}

// checkAuditParams checks an audit's change tracking and location settings.
func checkAuditParams(c *converter, n *node, out map[string]string) (string, bool) {
	for _, k := range []string{"track-changes", "identify-user"} {
		if v, ok := out[k]; ok && v != "true" && v != "false" {
			return fail(k + " must be set to true or false: '" + v + "' is an invalid value.")
		}
	}
	if v, ok := out["track-changes-reasons"]; ok && v != "on-form-edit" {
		return fail("track-changes-reasons must be set to on-form-edit: '" + v + "' is an invalid value.")
	}
	_, p := out["location-priority"]
	_, mi := out["location-min-interval"]
	_, ma := out["location-max-age"]
	if p || mi || ma {
		if !(p && mi && ma) {
			return fail("'location-priority', 'location-min-interval', and 'location-max-age' are required parameters when tracking location: give all three.")
		}
		switch out["location-priority"] {
		case "no-power", "low-power", "balanced", "high-accuracy":
		default:
			return fail("location-priority must be set to no-power, low-power, balanced, or high-accuracy.")
		}
		minI, err1 := strconv.Atoi(out["location-min-interval"])
		maxA, err2 := strconv.Atoi(out["location-max-age"])
		switch {
		case err1 != nil || err2 != nil:
			return fail("location-min-interval and location-max-age must be whole numbers of seconds.")
		case minI < 0:
			return fail("location-min-interval must be greater than or equal to zero.")
		case maxA < minI:
			return fail("location-max-age must be greater than or equal to location-min-interval.")
		}
	}
	return "", false
}

// checkImageParams checks the app an image question opens: an Android
// package name, as pyxform validates it.
func checkImageParams(c *converter, n *node, out map[string]string) (string, bool) {
	name, ok := out["app"]
	if a := n.row.Get("appearance"); !ok || (a != "" && a != "annotate") {
		return "", false // with another appearance the app is ignored
	}
	const prefix = "Parameter 'app' has an invalid Android package name - "
	segments := strings.Split(name, ".")
	switch {
	case strings.TrimSpace(name) == "":
		return prefix + "package name is missing.", true
	case !strings.Contains(name, "."):
		return prefix + "the package name must have at least one '.' separator.", true
	case strings.HasSuffix(name, "."):
		return prefix + "the package name cannot end in a '.' separator.", true
	}
	for _, seg := range segments {
		switch {
		case seg == "":
			return prefix + "package segments must be of non-zero length.", true
		case seg[0] == '_':
			return prefix + "the character '_' cannot be the first character in a package name segment.", true
		case seg[0] >= '0' && seg[0] <= '9':
			return prefix + "a digit cannot be the first character in a package name segment.", true
		}
		for _, r := range seg {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_') {
				return prefix + "the package name can only include letters (a-z, A-Z), numbers (0-9), dots (.), and underscores (_).", true
			}
		}
	}
	return "", false
}

// checkGeoParams checks what every geo question takes: allow-mock-accuracy
// is true or false, as written; incremental (geotrace, geoshape) is true
// or left out, as pyxform's yes/no aliases read it.
func checkGeoParams(c *converter, n *node, out map[string]string) (string, bool) {
	if v, ok := out["allow-mock-accuracy"]; ok && v != "true" && v != "false" {
		return fail("The 'allow-mock-accuracy' parameter must be either 'true' or 'false'.")
	}
	if v, ok := out["incremental"]; ok {
		switch v {
		case "yes", "Yes", "YES", "true", "True", "TRUE", "true()":
		default:
			return fail("For geoshape and geotrace questions, the 'incremental' parameter may either be 'true' or not included.")
		}
	}
	return "", false
}

// checkGeopointParams checks a geopoint's accuracy thresholds.
func checkGeopointParams(c *converter, n *node, out map[string]string) (string, bool) {
	if msg, whole := checkGeoParams(c, n, out); msg != "" {
		return msg, whole
	}
	number := func(k string) (float64, bool) { return paramNumber(out, k) }
	for _, k := range []string{"capture-accuracy", "warning-accuracy"} {
		if _, ok := out[k]; ok {
			if _, ok := number(k); !ok {
				return fail("The '" + k + "' parameter must have a numeric value.")
			}
		}
	}
	return "", false
}

// checkSelectParams checks the value and label names of a select from a file.
func checkSelectParams(c *converter, n *node, out map[string]string) (string, bool) {
	for _, k := range []string{"value", "label"} {
		if v, ok := out[k]; ok && !xmlName.MatchString(v) {
			return fmt.Sprintf("The parameters (%s) value is invalid. Names must begin with a letter or underscore. After the first character, names may contain letters, digits, underscores, hyphens, or periods.", k), true
		}
	}
	return "", false
}

// onStep reports whether d is a whole number of steps, allowing for
// decimal steps that binary floating point cannot hold exactly.
func onStep(d, step float64) bool {
	if step == 0 {
		return true
	}
	k := d / step
	return math.Abs(k-math.Round(k)) < 1e-9
}
