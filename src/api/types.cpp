// The small helpers of flash3/types.hpp and flash3/version.hpp.
#include <cstdint>
#include <string>

#include "flash3/types.hpp"
#include "flash3/version.hpp"

namespace flash3 {

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::kFloat16: return "float16";
    case DType::kBFloat16: return "bfloat16";
    case DType::kFloat32: return "float32";
    case DType::kFloat8E4M3: return "float8_e4m3";
    case DType::kInt32: return "int32";
  }
  return "invalid";  // a value cast from an integer outside the enum
}

int64_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::kFloat16: return 2;
    case DType::kBFloat16: return 2;
    case DType::kFloat32: return 4;
    case DType::kFloat8E4M3: return 1;
    case DType::kInt32: return 4;
  }
  throw Error(Status::kInvalidArgument,
              "flash3::dtype_size: " + std::to_string(static_cast<int32_t>(dtype)) + " is not a flash3::DType value");
}

TensorRef make_tensor(void* data, DType dtype, std::initializer_list<int64_t> shape,
                      std::initializer_list<int64_t> strides) {
  if (shape.size() > static_cast<size_t>(TensorRef::kMaxRank))
    throw Error(Status::kInvalidArgument, "flash3::make_tensor: rank " + std::to_string(shape.size()) +
                                              " exceeds the maximum rank " + std::to_string(TensorRef::kMaxRank));
  if (strides.size() != 0 && strides.size() != shape.size())
    throw Error(Status::kInvalidArgument, "flash3::make_tensor: " + std::to_string(strides.size()) +
                                              " strides given for rank " + std::to_string(shape.size()) +
                                              " (give one per dim, or none for contiguous)");
  TensorRef t;
  t.data = data;
  t.dtype = dtype;
  t.rank = static_cast<int32_t>(shape.size());
  int i = 0;
  for (int64_t s : shape) t.shape[i++] = s;
  if (strides.size() != 0) {
    i = 0;
    for (int64_t s : strides) t.stride[i++] = s;
    return t;
  }
  // Row-major, with size-0 and size-1 dims counted as 1 (as PyTorch does), so strides stay meaningful. Only the
  // strides must fit int64, not the total size: validation reports oversized tensors with the argument's name.
  int64_t stride = 1;
  for (int d = t.rank - 1; d >= 0; --d) {
    t.stride[d] = stride;
    const int64_t extent = t.shape[d] > 1 ? t.shape[d] : 1;
    if (d > 0 && __builtin_mul_overflow(stride, extent, &stride))
      throw Error(Status::kInvalidArgument, "flash3::make_tensor: contiguous strides overflow int64");
  }
  return t;
}

#define FLASH3_STR_(x) #x
#define FLASH3_STR(x) FLASH3_STR_(x)

const char* version_string() {
  return FLASH3_STR(FLASH3_VERSION_MAJOR) "." FLASH3_STR(FLASH3_VERSION_MINOR) "." FLASH3_STR(FLASH3_VERSION_PATCH);
}

}  // namespace flash3
