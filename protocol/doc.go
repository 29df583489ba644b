// Package protocol is the Personal Health Train security protocol, pure:
// the train config (ParseConfig, Config), its hashes, signatures, key
// wrapping and file encryption, on fs.FS trees of train files and results
// (/opt/pht_train, /opt/pht_results) and a Sink for the files a step
// writes. It reads no images; package train does that.
//
// The steps:
//
//   - Build makes a train the way the central builder does, with the
//     builder's route commitment in @context (a phtoci extension:
//     testdata/route_commitment/README.md).
//   - Verify checks a config without any key (CheckRouteCommitment among
//     it), CheckFileNames the train's file set against it, CheckTrain
//     plaintext train files.
//   - PreRunCheck is a station's pre-run: it decrypts and checks the train
//     files and the previous results.
//   - PostRun is a station's post-run as a session that keeps the
//     protocol's order (results encrypted, train checked, then signed).
//   - Decrypt is the researcher's end of the route.
//
// Verification failures match ErrVerification and one of the sentinels
// next to it (errors.Is).
package protocol
