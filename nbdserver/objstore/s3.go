package objstore

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/smithy-go"
)

// Config says how to reach the store. Empty fields come from the standard places, as every
// AWS tool reads them: AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL, AWS_REGION,
// AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY/AWS_SESSION_TOKEN, AWS_PROFILE and the profiles of
// ~/.aws/config and ~/.aws/credentials (endpoint_url, region, keys, role_arn,
// credential_process, SSO), then the instance's metadata service.
type Config struct {
	// Endpoint is the store's base URL (http://127.0.0.1:8333, https://rgw.example.org);
	// empty: from the environment or profile, else AWS S3 itself.
	Endpoint string
	// Region signs requests; empty: from the environment or profile, else us-east-1
	// (what S3-compatible stores expect when they do not care).
	Region string
	// Profile selects a profile of the shared configuration files instead of AWS_PROFILE.
	Profile string
	// CredentialsFile is a shared credentials file (INI, as ~/.aws/credentials) read instead
	// of the default one.
	CredentialsFile string
	// VirtualHost addresses buckets as BUCKET.ENDPOINT (AWS S3's default) even with a custom
	// endpoint; without it custom endpoints get path-style requests (ENDPOINT/BUCKET/KEY),
	// which every S3-compatible store understands.
	VirtualHost bool
	// Timeout bounds one request, retries included (default 30 s).
	Timeout time.Duration
}

// DefaultTimeout bounds one store request when Config.Timeout is zero.
const DefaultTimeout = 30 * time.Second

// Store is a connection to an S3-compatible store.
type Store struct {
	c        *s3.Client
	endpoint string
	region   string
	timeout  time.Duration
}

// Connect resolves the configuration (no request is sent yet).
func Connect(ctx context.Context, cfg Config) (*Store, error) {
	var opts []func(*config.LoadOptions) error
	if cfg.Region != "" {
		opts = append(opts, config.WithRegion(cfg.Region))
	}
	if cfg.Profile != "" {
		opts = append(opts, config.WithSharedConfigProfile(cfg.Profile))
	}
	if cfg.CredentialsFile != "" {
		if _, err := os.Stat(cfg.CredentialsFile); err != nil {
			return nil, fmt.Errorf("credentials file: %w", err)
		}
		opts = append(opts, config.WithSharedCredentialsFiles([]string{cfg.CredentialsFile}))
	}
	if cfg.Endpoint != "" {
		opts = append(opts, config.WithBaseEndpoint(cfg.Endpoint))
	}
	// Many parallel ranged GETs and chunk PUTs go to one host: keep their connections.
	hc := awshttp.NewBuildableClient().WithTransportOptions(func(t *http.Transport) {
		t.MaxIdleConns = 256
		t.MaxIdleConnsPerHost = 128
	})
	opts = append(opts, config.WithHTTPClient(hc))
	ac, err := config.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("S3 configuration: %w", err)
	}
	if ac.Region == "" {
		ac.Region = "us-east-1"
	}
	// Checksums only where the API requires them: S3-compatible stores differ in which
	// trailing checksums they accept, and chunk PUTs carry Content-MD5 instead, which
	// every store checks.
	ac.RequestChecksumCalculation = aws.RequestChecksumCalculationWhenRequired
	ac.ResponseChecksumValidation = aws.ResponseChecksumValidationWhenRequired
	endpoint := "AWS S3"
	custom := ac.BaseEndpoint != nil && *ac.BaseEndpoint != ""
	if custom {
		endpoint = *ac.BaseEndpoint
	}
	c := s3.NewFromConfig(ac, func(o *s3.Options) {
		o.UsePathStyle = custom && !cfg.VirtualHost
	})
	to := cfg.Timeout
	if to <= 0 {
		to = DefaultTimeout
	}
	return &Store{c: c, endpoint: endpoint, region: ac.Region, timeout: to}, nil
}

// Endpoint names the store for logs: its URL, or "AWS S3".
func (s *Store) Endpoint() string { return s.endpoint }

// Region is the region requests are signed for.
func (s *Store) Region() string { return s.region }

// Bucket returns one bucket of the store.
func (s *Store) Bucket(name string) Bucket { return &s3Bucket{s: s, name: name} }

type s3Bucket struct {
	s    *Store
	name string
}

var _ Bucket = (*s3Bucket)(nil)

func (b *s3Bucket) Name() string { return b.name }

func (b *s3Bucket) fail(op, key string, err error) error {
	return &OpError{Op: op, URL: URL{b.name, key}, Err: classify(err)}
}

// classify maps the SDK's errors onto ErrNotFound and ErrPrecondition by HTTP status
// (stores differ in error codes: NoSuchKey, NotFound, PreconditionFailed).
func classify(err error) error {
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		switch re.HTTPStatusCode() {
		case http.StatusNotFound:
			return fmt.Errorf("%w (%v)", ErrNotFound, apiMessage(err))
		case http.StatusPreconditionFailed, http.StatusConflict:
			// 409 ConditionalRequestConflict: a concurrent conditional write won.
			return fmt.Errorf("%w (%v)", ErrPrecondition, apiMessage(err))
		}
	}
	return err
}

func apiMessage(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode() + ": " + ae.ErrorMessage()
	}
	return err.Error()
}

func (b *s3Bucket) ctx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, b.s.timeout)
}

func (b *s3Bucket) Get(ctx context.Context, key string) ([]byte, Attrs, error) {
	ctx, cancel := b.ctx(ctx)
	defer cancel()
	out, err := b.s.c.GetObject(ctx, &s3.GetObjectInput{Bucket: &b.name, Key: &key})
	if err != nil {
		return nil, Attrs{}, b.fail("get", key, err)
	}
	defer out.Body.Close()
	data, err := io.ReadAll(out.Body)
	if err != nil {
		return nil, Attrs{}, b.fail("get", key, err)
	}
	return data, Attrs{Size: int64(len(data)), ETag: aws.ToString(out.ETag), Modified: aws.ToTime(out.LastModified)}, nil
}

func (b *s3Bucket) ReadRange(ctx context.Context, key string, p []byte, off int64, ifMatch string) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	ctx, cancel := b.ctx(ctx)
	defer cancel()
	in := &s3.GetObjectInput{Bucket: &b.name, Key: &key,
		Range: aws.String("bytes=" + strconv.FormatInt(off, 10) + "-" + strconv.FormatInt(off+int64(len(p))-1, 10))}
	if ifMatch != "" {
		in.IfMatch = &ifMatch
	}
	out, err := b.s.c.GetObject(ctx, in)
	if err != nil {
		var re *awshttp.ResponseError
		if errors.As(err, &re) && re.HTTPStatusCode() == http.StatusRequestedRangeNotSatisfiable {
			return 0, nil // at or past the end
		}
		return 0, b.fail("get", key, err)
	}
	defer out.Body.Close()
	n, err := io.ReadFull(out.Body, p)
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		// A short body is the end of the object only if the store said so.
		if out.ContentLength != nil && int64(n) == *out.ContentLength {
			return n, nil
		}
		return n, b.fail("get", key, fmt.Errorf("short body: %d of %d bytes", n, aws.ToInt64(out.ContentLength)))
	}
	if err != nil {
		return n, b.fail("get", key, err)
	}
	return n, nil
}

func (b *s3Bucket) Head(ctx context.Context, key string) (Attrs, error) {
	ctx, cancel := b.ctx(ctx)
	defer cancel()
	out, err := b.s.c.HeadObject(ctx, &s3.HeadObjectInput{Bucket: &b.name, Key: &key})
	if err != nil {
		return Attrs{}, b.fail("head", key, err)
	}
	return Attrs{Size: aws.ToInt64(out.ContentLength), ETag: aws.ToString(out.ETag), Modified: aws.ToTime(out.LastModified)}, nil
}

func (b *s3Bucket) Put(ctx context.Context, key string, data []byte, c Cond) (string, error) {
	ctx, cancel := b.ctx(ctx)
	defer cancel()
	sum := md5.Sum(data)
	in := &s3.PutObjectInput{Bucket: &b.name, Key: &key, Body: bytes.NewReader(data),
		ContentLength: aws.Int64(int64(len(data))), ContentMD5: aws.String(base64.StdEncoding.EncodeToString(sum[:]))}
	if c.IfNoneMatch {
		in.IfNoneMatch = aws.String("*")
	}
	if c.IfMatch != "" {
		in.IfMatch = aws.String(c.IfMatch)
	}
	out, err := b.s.c.PutObject(ctx, in)
	if err != nil {
		return "", b.fail("put", key, err)
	}
	return aws.ToString(out.ETag), nil
}

func (b *s3Bucket) Delete(ctx context.Context, key, ifMatch string) error {
	ctx, cancel := b.ctx(ctx)
	defer cancel()
	in := &s3.DeleteObjectInput{Bucket: &b.name, Key: &key}
	if ifMatch != "" {
		in.IfMatch = &ifMatch
	}
	if _, err := b.s.c.DeleteObject(ctx, in); err != nil {
		return b.fail("delete", key, err)
	}
	return nil
}

func (b *s3Bucket) List(ctx context.Context, prefix string, fn func(Object) error) error {
	p := s3.NewListObjectsV2Paginator(b.s.c, &s3.ListObjectsV2Input{Bucket: &b.name, Prefix: &prefix})
	for p.HasMorePages() {
		pctx, cancel := b.ctx(ctx)
		page, err := p.NextPage(pctx)
		cancel()
		if err != nil {
			return b.fail("list", prefix, err)
		}
		for _, o := range page.Contents {
			obj := Object{Key: aws.ToString(o.Key), Attrs: Attrs{Size: aws.ToInt64(o.Size), ETag: aws.ToString(o.ETag), Modified: aws.ToTime(o.LastModified)}}
			if err := fn(obj); err != nil {
				return err
			}
		}
	}
	return nil
}

// CreateBucket makes a bucket (tests and first-time setup; servers never create buckets).
func (s *Store) CreateBucket(ctx context.Context, name string) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	if _, err := s.c.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: &name}); err != nil {
		return &OpError{Op: "create bucket", URL: URL{Bucket: name}, Err: classify(err)}
	}
	return nil
}
