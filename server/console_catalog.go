package server

// catalog holds every string of the console, by language. The keys are
// the English strings themselves, so English needs no entries; a string
// missing from a language falls back to English (a test checks that none
// is missing from French).
var catalog = map[string]map[string]string{
	"en": {},
	"fr": catalogFR,
}
