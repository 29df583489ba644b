package train

import (
	"errors"
	"fmt"

	"github.com/phtoci/phtoci/protocol"
)

// Sentinel errors, for errors.Is. Classify says what each means (the
// CLI's exit code, the webhook's verdict); errors of the steps wrap them
// and name the file, layer or config field concerned.
var (
	// ErrUsage marks errors in what the caller asked for (bad reference,
	// missing option), as opposed to verification or I/O failures.
	ErrUsage = errors.New("usage")
	// ErrResultsEntry reports an entry of a results directory that is not a
	// regular file or directory (a symbolic link, FIFO, socket or device), or
	// one that was replaced by another file while post-run read it. Results
	// are regular files and directories only. It is a usage error: errors.Is
	// finds ErrUsage too.
	ErrResultsEntry = fmt.Errorf("results hold only regular files and directories%.0w", ErrUsage)
	// ErrResultsRequired reports a post-run on an encrypted image without a
	// results directory.
	ErrResultsRequired = errors.New("results required")
	// ErrNotATrain reports an image without /opt/train_config.json.
	ErrNotATrain = errors.New("not a train image")
	// ErrAlreadyDecrypted reports a pre-run on an image that pre-run made.
	ErrAlreadyDecrypted = errors.New("image is already decrypted")
	// ErrBaseMismatch reports a train that is not its master image plus train
	// paths. It also matches protocol.ErrVerification.
	ErrBaseMismatch = protocol.AlsoVerification(errors.New("train does not match its master image"))
	// ErrLeak reports that a layer post-run would keep holds plaintext the
	// protocol protects.
	ErrLeak = errors.New("plaintext would remain in a kept layer")
	// ErrAlreadyProcessed reports a train the station ledger says this station
	// has already signed (the same train again, or an older or altered image of
	// it: a replay or rollback meant to feed the station altered "previous
	// results" or to run it twice). It also matches protocol.ErrVerification.
	ErrAlreadyProcessed = protocol.AlsoVerification(errors.New("train already processed by this station"))
	// ErrChangedInTransit: a train was pushed before with other build-time
	// fields under the same train id (a route entry added or re-keyed, say). It is a verification failure:
	// errors.Is(err, protocol.ErrVerification) holds. (The webhook's ledger
	// reports it; it is declared here so that Classify knows it.)
	ErrChangedInTransit = protocol.AlsoVerification(errors.New("changed in transit"))
	// ErrTrainID: a train's @id the webhook's ledger cannot keep (empty,
	// invalid UTF-8, control characters, too long) or one that already
	// names another train (another creator id or immutable hash). It is a
	// verification failure (declared here so that Classify knows it).
	ErrTrainID = protocol.AlsoVerification(errors.New("invalid train id"))
	// ErrLedgerDamaged reports a station ledger file that cannot be read as a
	// ledger (not JSON lines, too large). It is an I/O-class error: the train
	// is not at fault, and nothing is checked until the file is repaired or
	// moved aside.
	ErrLedgerDamaged = errors.New("station ledger damaged")
	// ErrLedgerUnusable reports a station ledger that cannot be used
	// safely: its directory is not the running user's alone
	// (fsutil.ErrNotPrivate), the file or its lock is a symbolic link or
	// another user's, or it cannot be made. A station does not sign
	// without its ledger; it is a usage error (errors.Is finds ErrUsage).
	ErrLedgerUnusable = fmt.Errorf("unusable%.0w", ErrUsage)
)
