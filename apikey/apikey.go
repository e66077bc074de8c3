// Package apikey implements the format of spkgate API keys.
//
// A key is "spk_" followed by 30 base62 characters from crypto/rand and 6
// base62 characters that encode the CRC32 (IEEE) of the 34 characters before
// them — the layout GitHub uses for its tokens. The checksum lets the gateway
// reject a mistyped or made-up key without a cache or store lookup, and lets
// secret scanners recognise a real key.
//
// Only the SHA-256 of the whole key is stored (Hash); the display prefix
// ("spk_" and the first 6 random characters) and a separate random key id are
// the only parts shown again after creation.
package apikey

import (
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"hash/crc32"

	"github.com/spkgate/spkgate/keystore"
)

const (
	// Marker starts every key, so that people and secret scanners know
	// one when they see it. (A key's display prefix, keystore.Key.Prefix,
	// is Marker and the first characters after it.)
	Marker = "spk_"
	// RandomLen is the number of random base62 characters after Marker.
	RandomLen = 30
	// ChecksumLen is the number of base62 characters that encode the CRC32.
	ChecksumLen = 6
	// Len is the length of a whole key.
	Len = len(Marker) + RandomLen + ChecksumLen
	// DisplayLen is the length of the display prefix shown in lists.
	DisplayLen = len(Marker) + 6
	// IDMarker starts every key id.
	IDMarker = "key_"
	// idRandomLen is the number of random characters in a key id.
	idRandomLen = 20

	alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)

// ErrMalformed is returned by Check for anything that is not a well-formed key
// with a valid checksum. It never says which part was wrong: the message is
// the same for every malformed input and never contains the input.
var ErrMalformed = errors.New("malformed api key")

var crcTable = crc32.MakeTable(crc32.IEEE)

// isBase62 is indexed by byte and is true for the characters of alphabet.
var isBase62 = func() (t [256]bool) {
	for i := 0; i < len(alphabet); i++ {
		t[alphabet[i]] = true
	}
	return t
}()

// Check reports whether s is a well-formed key with a valid checksum. It
// does not allocate and takes the same path for every input of length Len,
// so that a flood of made-up keys costs almost nothing.
func Check(s string) error {
	if len(s) != Len || s[:len(Marker)] != Marker {
		return ErrMalformed
	}
	ok := true
	crc := ^uint32(0)
	for i := 0; i < len(Marker)+RandomLen; i++ {
		c := s[i]
		if i >= len(Marker) {
			ok = ok && isBase62[c]
		}
		crc = crcTable[byte(crc)^c] ^ (crc >> 8)
	}
	crc = ^crc
	var want [ChecksumLen]byte
	encodeChecksum(&want, crc)
	if !ok || s[len(Marker)+RandomLen:] != string(want[:]) {
		return ErrMalformed
	}
	return nil
}

// encodeChecksum writes crc as ChecksumLen base62 digits, most significant
// first, zero-padded (62^6 > 2^32, so every value fits).
func encodeChecksum(dst *[ChecksumLen]byte, crc uint32) {
	v := crc
	for i := ChecksumLen - 1; i >= 0; i-- {
		dst[i] = alphabet[v%62]
		v /= 62
	}
}

// Hash returns the SHA-256 of the whole key: the only form a store keeps.
func Hash(key string) keystore.Hash {
	var buf [Len]byte
	if len(key) == Len {
		copy(buf[:], key)
		return sha256.Sum256(buf[:])
	}
	return sha256.Sum256([]byte(key))
}

// Display returns the display prefix of a well-formed key (e.g. "spk_Ab3dE9").
func Display(key string) string {
	if len(key) < DisplayLen {
		return ""
	}
	return key[:DisplayLen]
}

// Generated is a freshly generated key: the secret, shown once, and what may
// be stored.
type Generated struct {
	// Secret is the whole key. It is shown to its owner once and never stored.
	Secret string
	// ID is the key's public identifier.
	ID string
	// Display is the display prefix.
	Display string
	// Hash is the SHA-256 of Secret.
	Hash keystore.Hash
}

// Generate makes a new key with RandomLen characters from crypto/rand, and a
// new random key id.
func Generate() (Generated, error) {
	var b [Len]byte
	copy(b[:], Marker)
	if err := randomBase62(b[len(Marker) : len(Marker)+RandomLen]); err != nil {
		return Generated{}, err
	}
	var sum [ChecksumLen]byte
	encodeChecksum(&sum, crc32.Checksum(b[:len(Marker)+RandomLen], crcTable))
	copy(b[len(Marker)+RandomLen:], sum[:])
	id, err := NewID()
	if err != nil {
		return Generated{}, err
	}
	secret := string(b[:])
	return Generated{Secret: secret, ID: id, Display: Display(secret), Hash: sha256.Sum256(b[:])}, nil
}

// NewID returns a new random key id ("key_" and 20 base62 characters).
func NewID() (string, error) {
	var b [len(IDMarker) + idRandomLen]byte
	copy(b[:], IDMarker)
	if err := randomBase62(b[len(IDMarker):]); err != nil {
		return "", err
	}
	return string(b[:]), nil
}

// randomBase62 fills dst with uniformly random base62 characters, by
// rejection sampling of crypto/rand bytes (no modulo bias).
func randomBase62(dst []byte) error {
	var buf [64]byte
	n := 0
	for n < len(dst) {
		if _, err := rand.Read(buf[:]); err != nil {
			return errors.New("reading random bytes: " + err.Error())
		}
		for _, c := range buf {
			if c >= 248 { // 248 = 4*62: keep the distribution uniform
				continue
			}
			dst[n] = alphabet[c%62]
			n++
			if n == len(dst) {
				break
			}
		}
	}
	return nil
}
