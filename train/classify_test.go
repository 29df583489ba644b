package train_test

import (
	"errors"
	"fmt"
	"os"
	"testing"

	"github.com/phtoci/phtoci/keys"
	"github.com/phtoci/phtoci/layer"
	"github.com/phtoci/phtoci/oci"
	"github.com/phtoci/phtoci/protocol"
	"github.com/phtoci/phtoci/train"
	"github.com/phtoci/phtoci/trust"
)

// TestClassify: every sentinel the CLI's exit codes and the webhook's
// verdicts knew, wrapped as the library wraps them, gets its kind and
// check; usage wins over verification; unknown errors are I/O.
func TestClassify(t *testing.T) {
	v := func(check string) train.Class { return train.Class{Kind: train.KindVerification, Check: check} }
	usage := train.Class{Kind: train.KindUsage}
	io := train.Class{Kind: train.KindIO}
	for _, c := range []struct {
		name string
		err  error
		want train.Class
	}{
		{"nil", nil, train.Class{Kind: train.KindOK}},
		{"changed in transit", train.ErrChangedInTransit, v("changed_in_transit")},
		{"integrity", protocol.ErrIntegrity, v("integrity")},
		{"unsafe entry", layer.ErrUnsafeEntry, v("unsafe_entry")},
		{"unsafe path", layer.ErrUnsafePath, v("unsafe_entry")},
		{"unsupported entry", layer.ErrUnsupportedEntry, v("unsafe_entry")},
		{"unsafe entry as verification", protocol.AlsoVerification(fmt.Errorf("layer 2: %w", layer.ErrUnsafePath)), v("unsafe_entry")},
		{"immutable files", protocol.ErrImmutableChanged, v("immutable_files")},
		{"user signature", protocol.ErrUserSignature, v("user_signature")},
		{"builder signature", protocol.ErrBuilderSignature, v("builder_signature")},
		{"previous results", protocol.ErrPreviousResultsChanged, v("previous_results")},
		{"result signature", protocol.ErrResultSignature, v("result_signature")},
		{"chain signature", protocol.ErrChainSignature, v("chain_signature")},
		{"unsigned file", protocol.ErrUnsignedFile, v("unsigned_file")},
		{"decryption", protocol.ErrDecryption, v("decryption")},
		{"invalid config", protocol.ErrInvalidConfig, v("config")},
		{"not a train", train.ErrNotATrain, v("not_a_train")},
		{"master image", train.ErrBaseMismatch, v("master_image")},
		{"limit", oci.ErrLimit, v("limit")},
		{"untrusted", trust.ErrUntrusted, v("untrusted")},
		{"route commitment", protocol.ErrRouteCommitment, v("route_commitment")},
		{"route commitment required by the trust store", fmt.Errorf("%w: none%.0w", trust.ErrUntrusted, protocol.ErrRouteCommitment), v("route_commitment")},
		{"leak", train.ErrLeak, v("leak")},
		{"already processed", train.ErrAlreadyProcessed, v("already_processed")},
		{"already signed", protocol.ErrAlreadySigned, v("already_signed")},
		{"not your turn", protocol.ErrNotYourTurn, v("not_your_turn")},
		{"station not on route", protocol.ErrStationNotOnRoute, v("station_not_on_route")},
		{"wrong private key", protocol.ErrWrongPrivateKey, v("wrong_private_key")},
		{"already decrypted", train.ErrAlreadyDecrypted, v("already_decrypted")},
		{"other verification failure", protocol.ErrVerification, v("verification")},
		{"usage", train.ErrUsage, usage},
		{"results entry", train.ErrResultsEntry, usage},
		{"results required", train.ErrResultsRequired, usage},
		{"unknown transport", oci.ErrUnknownTransport, usage},
		{"ambiguous reference", oci.ErrAmbiguous, usage},
		{"would overwrite", oci.ErrWouldOverwrite, usage},
		{"plain HTTP", oci.ErrPlainHTTP, usage},
		{"wrong password", keys.ErrWrongPassword, usage},
		{"password required", keys.ErrPasswordRequired, usage},
		{"build", protocol.ErrBuild, usage},
		{"post-run order", fmt.Errorf("finish: %w", protocol.ErrPostRunOrder), usage},
		{"usage wins over verification", fmt.Errorf("%w: %w", train.ErrUsage, layer.ErrUnsafePath), usage},
		{"ledger damaged", train.ErrLedgerDamaged, io},
		{"not found", oci.ErrNotFound, io},
		{"platform", oci.ErrPlatform, io},
		{"file", &os.PathError{Op: "open", Path: "x", Err: os.ErrNotExist}, io},
		{"other", errors.New("connection reset"), io},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := c.err
			if err != nil {
				err = fmt.Errorf("step: %w", err)
			}
			if got := train.Classify(err); got != c.want {
				t.Errorf("Classify(%v) = %+v, want %+v", err, got, c.want)
			}
		})
	}
}

// TestAlsoVerification: the helper keeps the error's message and identity
// and adds ErrVerification; nil stays nil.
func TestAlsoVerification(t *testing.T) {
	base := errors.New("not what was signed")
	err := protocol.AlsoVerification(base)
	if err.Error() != base.Error() || !errors.Is(err, base) || !errors.Is(err, protocol.ErrVerification) {
		t.Errorf("AlsoVerification(%q) = %q; Is(base) %v, Is(ErrVerification) %v", base, err, errors.Is(err, base), errors.Is(err, protocol.ErrVerification))
	}
	if protocol.AlsoVerification(nil) != nil {
		t.Error("AlsoVerification(nil) is not nil")
	}
	for _, e := range []error{train.ErrAlreadyProcessed, train.ErrBaseMismatch, trust.ErrUntrusted, train.ErrChangedInTransit, protocol.ErrUserSignature} {
		if !errors.Is(e, protocol.ErrVerification) || errors.Is(e, protocol.ErrDecryption) {
			t.Errorf("%v: Is(ErrVerification) %v, Is(ErrDecryption) %v", e, errors.Is(e, protocol.ErrVerification), errors.Is(e, protocol.ErrDecryption))
		}
	}
}
