package storage

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	gosync "sync"
	"time"

	"github.com/haven-org/haven"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// S3Config says how to reach an S3-compatible object store (MinIO).
type S3Config struct {
	Endpoint  string // host:port
	Bucket    string
	AccessKey string
	SecretKey string
	TLS       bool
	Region    string
	// KeyBucket keeps the key store when nodes share one (PostgreSQL with
	// an object store); default: Bucket + "-keys".
	KeyBucket string
}

// KeyBucketName is the bucket of the shared key store.
func (c S3Config) KeyBucketName() string {
	if c.KeyBucket != "" {
		return c.KeyBucket
	}
	return c.Bucket + "-keys"
}

// s3PartSize is the size of the parts a stream of unknown length is uploaded
// in: the memory one upload in progress holds, whatever the file's size.
const s3PartSize = 8 << 20

// s3Prefix keeps Haven's objects apart in a shared bucket.
const s3Prefix = "haven/"

// S3Store keeps objects in an S3-compatible object store. Objects arrive
// encrypted (Haven never relies on the store's own encryption) under names
// that say nothing of what they hold; a Put has returned only once the
// object store holds the object, so Sync has nothing to do.
type S3Store struct {
	client *minio.Client
	bucket string
}

// NewS3Store connects, checks the connection and the credentials, and
// creates the bucket if it does not exist. Its errors say what to fix.
func NewS3Store(ctx context.Context, cfg S3Config) (*S3Store, error) {
	if cfg.Endpoint == "" || cfg.Bucket == "" {
		return nil, haven.Errorf(haven.EINVALID, "object storage needs an endpoint (--s3-endpoint host:port) and a bucket (--s3-bucket).")
	}
	if strings.Contains(cfg.Endpoint, "://") {
		return nil, haven.Errorf(haven.EINVALID, "the object storage endpoint %q is not host:port: give it without http:// or https:// (--s3-tls says whether to use TLS).", cfg.Endpoint)
	}
	client, err := minio.New(cfg.Endpoint, &minio.Options{
		Creds:  credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, ""),
		Secure: cfg.TLS,
		Region: cfg.Region,
		// A device waits for the answer: after two quick retries, say 503
		// and let it send again later, rather than hold it for many seconds.
		MaxRetries: 2,
	})
	if err != nil {
		return nil, haven.Errorf(haven.EINVALID, "the object storage endpoint %q is not usable: %v. Give host:port, without http://.", cfg.Endpoint, err)
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	exists, err := client.BucketExists(cctx, cfg.Bucket)
	for err != nil && starting(err) && cctx.Err() == nil {
		// The object store is still starting (started together with Haven).
		time.Sleep(250 * time.Millisecond)
		exists, err = client.BucketExists(cctx, cfg.Bucket)
	}
	if err != nil {
		return nil, haven.Errorf(haven.EUNAVAILABLE, "Haven cannot use the object storage at %s (bucket %q): %s", cfg.Endpoint, cfg.Bucket, explainS3(err, cfg))
	}
	if !exists {
		// "Already yours" means it is there: a distributed store can say so
		// when its client retried a creation that had gone through.
		if err := client.MakeBucket(cctx, cfg.Bucket, minio.MakeBucketOptions{Region: cfg.Region}); err != nil && minio.ToErrorResponse(err).Code != "BucketAlreadyOwnedByYou" {
			return nil, haven.Errorf(haven.EUNAVAILABLE, "Haven could not create the bucket %q at %s: %s", cfg.Bucket, cfg.Endpoint, explainS3(err, cfg))
		}
	}
	return &S3Store{client: client, bucket: cfg.Bucket}, nil
}

// starting reports whether the object store answered that it is still starting up.
func starting(err error) bool {
	resp := minio.ToErrorResponse(err)
	return resp.Code == "XMinioServerNotInitialized" || resp.StatusCode == 503 || strings.Contains(err.Error(), "not initialized")
}

func explainS3(err error, cfg S3Config) string {
	resp := minio.ToErrorResponse(err)
	switch {
	case resp.Code == "InvalidAccessKeyId" || resp.Code == "SignatureDoesNotMatch" || resp.Code == "AccessDenied":
		return fmt.Sprintf("the access key or secret key is wrong (%s). Check --s3-access-key and --s3-secret-key.", resp.Code)
	case strings.Contains(err.Error(), "connection refused") || strings.Contains(err.Error(), "no such host") || errors.Is(err, context.DeadlineExceeded):
		return fmt.Sprintf("nothing answers there (%v). Is the object store running, and is --s3-endpoint right?", err)
	case strings.Contains(err.Error(), "server gave HTTP response to HTTPS client") || strings.Contains(err.Error(), "first record does not look like a TLS handshake"):
		if cfg.TLS {
			return "it does not speak TLS: leave --s3-tls off."
		}
		return "it speaks TLS: add --s3-tls."
	}
	return err.Error()
}

// s3Small is the size up to which an object is read into memory and sent
// in one request of known length. A stream of unknown length makes the
// client hold a part buffer of s3PartSize (8 MiB, allocated and zeroed per
// upload) even for a 100 KB photo; most objects are far smaller.
const s3Small = 1 << 20

var s3SmallBufs = gosync.Pool{New: func() any { b := make([]byte, s3Small); return &b }}

// Put uploads r as the object name: in one request when it is small,
// streaming in parts of 8 MiB otherwise.
func (s *S3Store) Put(ctx context.Context, name string, r io.Reader) (int64, error) {
	bp := s3SmallBufs.Get().(*[]byte)
	defer s3SmallBufs.Put(bp)
	n, err := io.ReadFull(r, *bp)
	size := int64(-1)
	switch {
	case err == io.EOF || err == io.ErrUnexpectedEOF:
		r, size = bytes.NewReader((*bp)[:n]), int64(n)
	case err != nil:
		return 0, err
	default:
		r = io.MultiReader(bytes.NewReader((*bp)[:n]), r)
	}
	info, err := s.client.PutObject(ctx, s.bucket, s3Prefix+name, r, size,
		minio.PutObjectOptions{PartSize: s3PartSize, ContentType: "application/octet-stream"})
	if err != nil {
		return 0, err
	}
	return info.Size, nil
}

// Sync has nothing to do: a Put returns once the object store holds the object.
func (s *S3Store) Sync(ctx context.Context) error { return nil }

// Open opens the object name for reading; a missing object is an error now,
// not in the middle of a download.
func (s *S3Store) Open(ctx context.Context, name string) (io.ReadCloser, error) {
	obj, err := s.client.GetObject(ctx, s.bucket, s3Prefix+name, minio.GetObjectOptions{})
	if err != nil {
		return nil, err
	}
	if _, err := obj.Stat(); err != nil {
		obj.Close()
		return nil, err
	}
	return obj, nil
}

// Delete removes the object name; a missing object is not an error.
func (s *S3Store) Delete(ctx context.Context, name string) error {
	return s.client.RemoveObject(ctx, s.bucket, s3Prefix+name, minio.RemoveObjectOptions{})
}

// List calls fn with every object's name and time of writing.
func (s *S3Store) List(ctx context.Context, fn func(name string, written time.Time) error) error {
	for obj := range s.client.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{Prefix: s3Prefix, Recursive: true}) {
		if obj.Err != nil {
			return obj.Err
		}
		if err := fn(strings.TrimPrefix(obj.Key, s3Prefix), obj.LastModified); err != nil {
			return err
		}
	}
	return nil
}

// RemoveIncomplete aborts multipart uploads started before cutoff and never
// finished (an upload cut by a crash or an outage).
func (s *S3Store) RemoveIncomplete(ctx context.Context, cutoff time.Time) (int, error) {
	n := 0
	for up := range s.client.ListIncompleteUploads(ctx, s.bucket, s3Prefix, true) {
		if up.Err != nil {
			return n, up.Err
		}
		if up.Initiated.Before(cutoff) {
			if err := s.client.RemoveIncompleteUpload(ctx, s.bucket, up.Key); err != nil {
				return n, err
			}
			n++
		}
	}
	return n, nil
}
