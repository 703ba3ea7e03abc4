package haven

import "time"

// Sensitivity is a field's tier, after the MIMU classification the seed
// documents describe: who may see the field's values.
type Sensitivity string

const (
	Public Sensitivity = "public"  // no restriction
	Level0 Sensitivity = "level_0" // undecided: handled as Level3 until someone classifies it
	Level1 Sensitivity = "level_1" // the team and named partners
	Level2 Sensitivity = "level_2" // the team only
	Level3 Sensitivity = "level_3" // named users only
)

// Sensitivities lists the tiers from least to most restricted.
var Sensitivities = []Sensitivity{Public, Level0, Level1, Level2, Level3}

// Valid reports whether s is one of the tiers.
func (s Sensitivity) Valid() bool {
	for _, t := range Sensitivities {
		if s == t {
			return true
		}
	}
	return false
}

// Effective is the tier access control applies: an undecided field is
// handled as the strictest tier.
func (s Sensitivity) Effective() Sensitivity {
	if s == Level0 {
		return Level3
	}
	return s
}

// Rank orders effective tiers: 0 public, 1..3 the levels.
func (s Sensitivity) Rank() int {
	switch s.Effective() {
	case Public:
		return 0
	case Level1:
		return 1
	case Level2:
		return 2
	default:
		return 3
	}
}

// MaxSensitivity is the stricter of two tiers (level_0 counts as level_3,
// and is kept as itself when it is the stricter); "" is no tier at all.
func MaxSensitivity(a, b Sensitivity) Sensitivity {
	switch {
	case a == "":
		return b
	case b == "":
		return a
	}
	if b.Rank() > a.Rank() || (b.Rank() == a.Rank() && b == Level0) {
		return b
	}
	return a
}

// ClassificationDeadline is how long a field may stay at level_0 before its
// form is flagged "classification overdue" (the seed's 24-hour rule).
const ClassificationDeadline = 24 * time.Hour

// Legal bases a form may declare instead of (or with) consent.
const (
	BasisConsent            = "consent"
	BasisVitalInterest      = "vital_interest"
	BasisPublicInterest     = "public_interest"
	BasisLegitimateInterest = "legitimate_interest"
	BasisLegalObligation    = "legal_obligation"
	BasisContract           = "contract"
)

// LegalBases lists every legal basis Haven knows, as written in settings.
var LegalBases = []string{BasisConsent, BasisVitalInterest, BasisPublicInterest, BasisLegitimateInterest, BasisLegalObligation, BasisContract}

// Consent outcomes of a submission.
const (
	ConsentGiven     = "given"     // the consent question was answered affirmatively
	ConsentRefused   = "refused"   // answered, but not affirmatively
	ConsentMissing   = "missing"   // not answered (skipped or not relevant)
	ConsentNotNeeded = "not_asked" // the form relies on another legal basis
)

// ConsentRecord is the evidence of consent kept with a stored submission.
type ConsentRecord struct {
	Outcome          string     `json:"outcome"`
	LegalBasis       string     `json:"legalBasis"`
	Field            string     `json:"field,omitempty"`            // the consent question's path
	StatementVersion string     `json:"statementVersion,omitempty"` // SHA-256 of the statement in every language
	Language         string     `json:"language,omitempty"`         // the form's language, when it has exactly one
	DeviceStart      *time.Time `json:"deviceStart"`
	DeviceEnd        *time.Time `json:"deviceEnd"`
	ReceivedAt       time.Time  `json:"receivedAt"`
	DeviceUserID     int64      `json:"deviceUserId"`
	DeviceID         string     `json:"deviceId"`
}
