package train

import (
	"errors"

	"github.com/phtoci/phtoci/keys"
	"github.com/phtoci/phtoci/layer"
	"github.com/phtoci/phtoci/oci"
	"github.com/phtoci/phtoci/protocol"
	"github.com/phtoci/phtoci/trust"
)

// Kind is what an error means to whoever asked for a step. Its values are
// the CLI's exit codes.
type Kind int

const (
	// KindOK: no error.
	KindOK Kind = iota
	// KindVerification: the image is not a train that verifies (tampering,
	// a broken signature, a limit it breaks, route state).
	KindVerification
	// KindUsage: what the caller asked for cannot be done (a bad reference
	// or option, an output that would overwrite an input).
	KindUsage
	// KindIO: anything else (files, network, registries); worth a retry.
	KindIO
)

func (k Kind) String() string {
	switch k {
	case KindOK:
		return "ok"
	case KindVerification:
		return "verification"
	case KindUsage:
		return "usage"
	default:
		return "io"
	}
}

// Class is an error's Kind and, for KindVerification, the check that
// failed.
type Class struct {
	Kind Kind
	// Check names the failed check ("user_signature", "limit", …; the
	// README's webhook section lists them); "verification" when no more specific one matches. Empty
	// unless Kind is KindVerification.
	Check string
}

// usages are the errors of KindUsage besides those matching ErrUsage.
var usages = []error{
	ErrUsage, ErrResultsRequired,
	oci.ErrUnknownTransport, oci.ErrAmbiguous, oci.ErrWouldOverwrite, oci.ErrPlainHTTP, oci.ErrOutputForm,
	keys.ErrWrongPassword, keys.ErrPasswordRequired, protocol.ErrBuild, protocol.ErrPostRunOrder,
	protocol.ErrNothingToDecrypt,
}

// checks maps the errors of KindVerification to check names, most
// specific first: an error takes the first name it matches (errors.Is).
var checks = []struct {
	err  error
	name string
}{
	{ErrChangedInTransit, "changed_in_transit"}, {ErrTrainID, "train_id"}, {protocol.ErrIntegrity, "integrity"}, {layer.ErrUnsafeEntry, "unsafe_entry"},
	{protocol.ErrImmutableChanged, "immutable_files"}, {protocol.ErrUserSignature, "user_signature"},
	{protocol.ErrBuilderSignature, "builder_signature"}, {protocol.ErrPreviousResultsChanged, "previous_results"},
	{protocol.ErrResultSignature, "result_signature"}, {protocol.ErrChainSignature, "chain_signature"},
	{protocol.ErrUnsignedFile, "unsigned_file"}, {protocol.ErrDecryption, "decryption"},
	{protocol.ErrInvalidConfig, "config"}, {ErrNotATrain, "not_a_train"}, {ErrBaseMismatch, "master_image"},
	{oci.ErrLimit, "limit"},
	{protocol.ErrRouteCommitment, CheckRouteCommitment}, {trust.ErrUntrusted, "untrusted"}, {ErrLeak, "leak"}, {ErrAlreadyProcessed, "already_processed"},
	{protocol.ErrAlreadySigned, "already_signed"}, {protocol.ErrNotYourTurn, "not_your_turn"},
	{protocol.ErrStationNotOnRoute, "station_not_on_route"}, {protocol.ErrWrongPrivateKey, "wrong_private_key"},
	{ErrAlreadyDecrypted, "already_decrypted"},
}

// Classify tells what err means: the CLI's exit code and the webhook's
// verdict both come from it. Usage wins over verification (a results
// directory the caller gave that holds a link is the caller's mistake);
// anything unknown is KindIO.
func Classify(err error) Class {
	if err == nil {
		return Class{Kind: KindOK}
	}
	for _, u := range usages {
		if errors.Is(err, u) {
			return Class{Kind: KindUsage}
		}
	}
	for _, c := range checks {
		if errors.Is(err, c.err) {
			return Class{Kind: KindVerification, Check: c.name}
		}
	}
	if errors.Is(err, protocol.ErrVerification) {
		return Class{Kind: KindVerification, Check: "verification"}
	}
	return Class{Kind: KindIO}
}
