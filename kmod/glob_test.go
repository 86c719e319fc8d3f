package kmod

import (
	"testing"
)

func TestMatch(t *testing.T) {
	tests := []struct {
		pattern, name string
		want          bool
	}{
		{"crc32c", "crc32c", true},
		{"crc32c", "crc32", false},
		{"pci:v00001AF4d*sv*sd*bc*sc*i*", "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00", true},
		{"pci:v00001AF4d*sv*sd*bc*sc*i*", "pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00", false},
		{"pci:v00008086d0000100Esv*sd*bc*sc*i*", "pci:v00008086d0000100Esv00001AF4sd00001100bc02sc00i00", true},
		{"virtio:d00000001v*", "virtio:d00000001v00001AF4", true},
		{"virtio:d00000001v*", "virtio:d00000002v00001AF4", false},
		{"cpu:type:x86,ven*fam*mod*:feature:*0094*", "cpu:type:x86,ven0000fam0006mod003F:feature:,0000,0001,0094,00E5", true},
		{"cpu:type:x86,ven*fam*mod*:feature:*0094*", "cpu:type:x86,ven0000fam0006mod003F:feature:,0000,0001,0095", false},
		{"block_major_43_*", "block_major_43_0", true},
		{"a?c", "abc", true},
		{"a?c", "ac", false},
		{"*", "", true},
		{"", "", true},
		{"", "x", false},
		{"a*", "a", true},
		{"*a*b*c*", "xxaxxbxxcxx", true},
		{"*a*b*c*", "xxaxxcxxbxx", false},
		{"usb:v*p*d*dc*dsc*dp*ic03isc*ip*in*", "usb:v0627p0001d0000dc00dsc00dp00ic03isc00ip00in00", true},
		{"[a-c]x", "bx", true},
		{"[a-c]x", "dx", false},
		{"[!a-c]x", "dx", true},
		{"[^a-c]x", "ax", false},
		{"[]]", "]", true},
		{"[a-]", "-", true},
		{"[\\]]", "]", true},
		{"[abc", "[abc", true}, // no closing ']': a literal '['
		{"[abc", "a", false},
		{"\\*", "*", true},
		{"\\*", "x", false},
		{"a\\", "a\\", true},
		{"mdio:0000000000011100110010010001????", "mdio:00000000000111001100100100010110", true},
	}
	for _, tt := range tests {
		t.Run(tt.pattern+"~"+tt.name, func(t *testing.T) {
			if got := Match(tt.pattern, tt.name); got != tt.want {
				t.Errorf("Match(%q, %q) = %v, want %v", tt.pattern, tt.name, got, tt.want)
			}
		})
	}
}

func TestNormalizeAlias(t *testing.T) {
	tests := []struct{ in, want string }{
		{"crypto-crc32c", "crypto_crc32c"},
		{"fs-ext4", "fs_ext4"},
		{"pci:v00001AF4d*", "pci:v00001AF4d*"},
		{"x[a-z]-y", "x[a-z]_y"}, // '-' inside a class is a range, not a name part
		{"net-pf-17", "net_pf_17"},
	}
	for _, tt := range tests {
		if got := NormalizeAlias(tt.in); got != tt.want {
			t.Errorf("NormalizeAlias(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// FuzzMatch checks that matching never panics and that literal patterns match themselves
// and a '*' suffix matches every extension.
func FuzzMatch(f *testing.F) {
	f.Add("pci:v00001AF4d*sv*sd*bc*sc*i*", "pci:v00001AF4d00001000sv00001AF4sd00000001bc02sc00i00")
	f.Add("[!a-]x\\", "bx")
	f.Add("*[", "[")
	f.Fuzz(func(t *testing.T, pattern, name string) {
		Match(pattern, name)
		if !hasMeta(name) && !Match(name, name) {
			t.Errorf("literal %q does not match itself", name)
		}
		if !hasMeta(pattern) && !Match(pattern+"*", pattern+name) {
			t.Errorf("%q* does not match %q", pattern, pattern+name)
		}
	})
}
