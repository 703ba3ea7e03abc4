package app_test

import (
	"testing"

	"github.com/haven-org/haven/storage/storagetest"
)

func TestMain(m *testing.M) { storagetest.MainBoth(m) }
