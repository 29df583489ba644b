package train

// Paths of a train inside an image, as layer paths (no leading slash).
const (
	ConfigPath  = "opt/train_config.json"
	TrainDir    = "opt/pht_train"
	ResultsDir  = "opt/pht_results"
	UserKeyPath = "opt/user_sym_key.key"
	optDir      = "opt"
)

// trainPaths are the train paths: everything a train may change while it
// travels (what a step resolves).
var trainPaths = []string{ConfigPath, TrainDir, ResultsDir, UserKeyPath}

// Labels phtoci writes into every image config it produces, besides
// layer.BaseLabel (the number of base layers).
const (
	// StateLabel says whether the protocol layer holds ciphertext
	// ("encrypted", after build and post-run) or plaintext ("decrypted",
	// after pre-run).
	StateLabel = "org.phtoci.state"
	// StationLabel names the station whose step produced the image.
	StationLabel = "org.phtoci.station"
)

const (
	stateEncrypted = "encrypted"
	stateDecrypted = "decrypted"
)
