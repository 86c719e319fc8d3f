// Package dhcpclient is nbdroot's DHCP client beyond the single exchange a library gives:
// the init's DHCPv4 exchange with transaction IDs that never wait for the kernel's entropy
// pool (Obtain), and the Renewer, which keeps the DHCPv4 lease of the interface that carries
// the root alive after switch_root — renewing and rebinding it at T1 and T2 (RFC 2131
// section 4.4.5) — until the booted system's network manager takes it over (Detect).
//
// The Renewer runs inside the NBD keeper process (nbdclient.KeeperMain starts it): that
// process survives switch_root, never touches a file of the root, and logs to the kernel
// log. What the Renewer must never do: remove or shorten the address. The kernel was given
// it without lifetime (valid_lft forever), so the root's connection does not depend on a
// DHCP server answering; when no server answers, the lease runs out on paper only, and the
// kernel log says so loudly.
//
// Messages are built and read by insomniacslk/dhcp; the raw-socket transport is nclient4's.
package dhcpclient
