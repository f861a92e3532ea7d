#pragma once
#define FLASH3_VERSION_MAJOR 0
#define FLASH3_VERSION_MINOR 1
#define FLASH3_VERSION_PATCH 0
namespace flash3 {
// "major.minor.patch"
const char* version_string();
}  // namespace flash3
