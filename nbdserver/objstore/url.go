package objstore

import (
	"errors"
	"fmt"
	"strings"
)

// Scheme is the prefix of object URLs.
const Scheme = "s3://"

// URL names an object, or a prefix of objects, in a bucket: s3://BUCKET/KEY.
type URL struct {
	Bucket string
	Key    string
}

// IsURL reports whether s names an object store location rather than a local path.
func IsURL(s string) bool { return strings.HasPrefix(s, Scheme) }

// ParseURL parses s3://BUCKET/KEY. The bucket follows S3's naming rules loosely (lower-case
// letters, digits, dots and hyphens, 3–63 characters); the key may be empty only when
// allowEmptyKey (a prefix at the top of a bucket).
func ParseURL(s string, allowEmptyKey bool) (URL, error) {
	rest, ok := strings.CutPrefix(s, Scheme)
	if !ok {
		return URL{}, fmt.Errorf("%q: want s3://BUCKET/KEY", s)
	}
	bucket, key, _ := strings.Cut(rest, "/")
	if err := validBucket(bucket); err != nil {
		return URL{}, fmt.Errorf("%q: %w", s, err)
	}
	if key == "" && !allowEmptyKey {
		return URL{}, fmt.Errorf("%q: no object key after the bucket (want s3://BUCKET/KEY)", s)
	}
	if strings.Contains(key, "//") || strings.HasPrefix(key, "/") {
		return URL{}, fmt.Errorf("%q: empty path element in the key", s)
	}
	for _, el := range strings.Split(key, "/") {
		if el == "." || el == ".." {
			return URL{}, fmt.Errorf("%q: %q is not allowed as a key element", s, el)
		}
	}
	return URL{Bucket: bucket, Key: key}, nil
}

func validBucket(b string) error {
	if len(b) < 3 || len(b) > 63 {
		return errors.New("bucket name must have 3 to 63 characters")
	}
	for i := 0; i < len(b); i++ {
		c := b[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			return fmt.Errorf("bucket name %q: only lower-case letters, digits, '.', '-' and '_'", b)
		}
	}
	return nil
}

// String is the URL in s3://BUCKET/KEY form.
func (u URL) String() string { return Scheme + u.Bucket + "/" + u.Key }

// Join appends path elements to the key, with one "/" between them.
func (u URL) Join(elem ...string) URL {
	k := strings.TrimSuffix(u.Key, "/")
	for _, e := range elem {
		if k == "" {
			k = e
		} else {
			k += "/" + e
		}
	}
	return URL{Bucket: u.Bucket, Key: k}
}

// ParseSize parses a size in bytes with an optional binary suffix: K, M, G or T (also KiB,
// MiB, GiB, TiB): "512M", "2GiB", "1048576".
func ParseSize(s string) (int64, error) {
	num := strings.TrimRight(s, "KMGTiBkmgtib")
	suffix := strings.TrimSuffix(strings.TrimSuffix(strings.ToUpper(s[len(num):]), "B"), "I")
	var shift uint
	switch suffix {
	case "":
	case "K":
		shift = 10
	case "M":
		shift = 20
	case "G":
		shift = 30
	case "T":
		shift = 40
	default:
		return 0, fmt.Errorf("size %q: want a number of bytes with an optional K, M, G or T", s)
	}
	var n int64
	if _, err := fmt.Sscan(num, &n); err != nil || n < 0 || fmt.Sprint(n) != num {
		return 0, fmt.Errorf("size %q: want a number of bytes with an optional K, M, G or T", s)
	}
	if n > (1<<62)>>shift {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	return n << shift, nil
}
