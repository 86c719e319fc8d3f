// Package objstore is nbdroot's access to S3-compatible object storage (AWS S3, Ceph RGW,
// SeaweedFS, MinIO): a small Bucket interface with an S3 implementation and an in-memory
// fake, the block cache that serves an image object through ranged GETs, and the lease
// that keeps two servers from serving one writer at once.
//
// What it owns: object names (URL), the store's errors as values (ErrNotFound,
// ErrPrecondition), conditional writes (If-None-Match, If-Match), the cache's memory bound,
// and the lease protocol (see lease.go). What it must never do:
//   - serve bytes of an image object other than the version it opened (every ranged GET
//     carries If-Match with the ETag seen at open, so a replaced object fails loudly);
//   - let a lease holder believe it holds the lease after another server could have taken
//     it over (the holder's validity ends a tenth of the TTL before anyone may take over);
//   - send anything anywhere but the configured endpoint.
package objstore
