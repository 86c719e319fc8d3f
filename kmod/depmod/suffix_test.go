package depmod

import "testing"

func TestModuleFileName(t *testing.T) {
	tests := []struct {
		file   string
		want   string
		wantOK bool
	}{
		{"kernel/fs/ext4/ext4.ko", "ext4", true},
		{"kernel/drivers/md/dm-crypt.ko.xz", "dm_crypt", true},
		{"kernel/drivers/md/dm-mod.ko.zst", "dm_mod", true},
		{"kernel/arch/x86/crypto/crc32c-intel.ko.gz", "crc32c_intel", true},
		{"8139too.ko", "8139too", true},
		{"/abs/extra/out-of-tree.ko", "out_of_tree", true},
		{"README", "", false},
		{"README.kobj", "", false},
		{"modules.dep", "", false},
		{"x.ko.bz2", "", false},
		{".ko", "", false},
		{"dir.ko/file", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			got, ok := ModuleFileName(tt.file)
			if got != tt.want || ok != tt.wantOK {
				t.Errorf("ModuleFileName(%q) = %q, %v; want %q, %v", tt.file, got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

func TestUncompressedName(t *testing.T) {
	for in, want := range map[string]string{
		"kernel/fs/ext4/ext4.ko.xz":         "kernel/fs/ext4/ext4.ko",
		"kernel/drivers/md/dm-mod.ko.zst":   "kernel/drivers/md/dm-mod.ko",
		"kernel/lib/crc16.ko.gz":            "kernel/lib/crc16.ko",
		"kernel/drivers/block/nbd.ko":       "kernel/drivers/block/nbd.ko",
		"firmware/rtl_nic/rtl8168h-2.fw.xz": "firmware/rtl_nic/rtl8168h-2.fw.xz",
	} {
		if got := UncompressedName(in); got != want {
			t.Errorf("UncompressedName(%q) = %q, want %q", in, got, want)
		}
	}
}
