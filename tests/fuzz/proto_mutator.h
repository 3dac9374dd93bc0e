// A small structure-aware mutator for protobuf inputs (libprotobuf-mutator
// is not packaged in Debian 12): parse the input, change one field found by
// reflection, serialize again. Byte-level mutation would mostly break the
// wire format and never get past the parser; this keeps inputs valid
// messages and spends the fuzzer's time in the code behind the parser.
// Strings are drawn from a dictionary and from the message's own strings,
// so names keep referring to each other (a node input naming a tensor).
#ifndef BONSAI_TESTS_FUZZ_PROTO_MUTATOR_H_
#define BONSAI_TESTS_FUZZ_PROTO_MUTATOR_H_

#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "google/protobuf/descriptor.h"
#include "google/protobuf/message.h"

extern "C" size_t LLVMFuzzerMutate(uint8_t* data, size_t size, size_t max_size);

namespace bonsai::fuzz {

class ProtoMutator {
 public:
  using Message = google::protobuf::Message;
  using Field = google::protobuf::FieldDescriptor;

  ProtoMutator(unsigned seed, std::vector<std::string> dictionary)
      : rng_(seed), dictionary_(std::move(dictionary)) {}

  // Changes one field somewhere in `message` (set or not).
  void MutateOnce(Message& message) {
    slots_.clear();
    strings_ = dictionary_;
    Collect(message, 0);
    if (slots_.empty()) return;
    const Slot slot = slots_[Below(slots_.size())];
    Mutate(*slot.message, slot.field);
  }

  uint64_t Below(uint64_t n) { return n == 0 ? 0 : rng_() % n; }
  bool OneIn(uint64_t n) { return Below(n) == 0; }

  int64_t Integer(int64_t current) {
    static constexpr int64_t kSpecial[] = {0, 1, 2, 3, 4, 8, 16, 255, -1, -2,
                                           std::numeric_limits<int32_t>::max(),
                                           std::numeric_limits<int32_t>::min(),
                                           std::numeric_limits<int64_t>::max(),
                                           std::numeric_limits<int64_t>::min(),
                                           int64_t{1} << 32, int64_t{1} << 40};
    switch (Below(3)) {
      case 0: return kSpecial[Below(std::size(kSpecial))];
      case 1: return static_cast<int64_t>(static_cast<uint64_t>(current) + Below(9) - 4);
      default: return static_cast<int64_t>(rng_());
    }
  }

  double Real() {
    static constexpr double kSpecial[] = {0.0, -0.0, 0.5, 1.0, -1.0, 0.999999, 1e-300, 1e300,
                                          std::numeric_limits<double>::quiet_NaN(),
                                          std::numeric_limits<double>::infinity(),
                                          -std::numeric_limits<double>::infinity()};
    if (OneIn(2)) return kSpecial[Below(std::size(kSpecial))];
    return static_cast<double>(rng_() % 100001) / 100000.0;
  }

  std::string String(const std::string& current) {
    if (!strings_.empty() && OneIn(2)) return strings_[Below(strings_.size())];
    std::string out = current;
    const size_t max = current.size() * 2 + 16;
    out.resize(max);
    out.resize(LLVMFuzzerMutate(reinterpret_cast<uint8_t*>(out.data()), current.size(), max));
    return out;
  }

  // proto3 string fields must hold UTF-8 (else the message fails to parse
  // back); ASCII keeps them valid.
  std::string Text(const Field* field, const std::string& current) {
    std::string out = String(current);
    if (field->type() == Field::TYPE_STRING &&
        field->file()->syntax() == google::protobuf::FileDescriptor::SYNTAX_PROTO3) {
      for (char& c : out) c &= 0x7f;
    }
    return out;
  }

 private:
  struct Slot {
    Message* message;
    const Field* field;
  };

  void Collect(Message& message, int depth) {
    const auto* descriptor = message.GetDescriptor();
    const auto* reflection = message.GetReflection();
    for (int i = 0; i < descriptor->field_count(); ++i) {
      const Field* field = descriptor->field(i);
      slots_.push_back({&message, field});
      if (field->cpp_type() == Field::CPPTYPE_STRING) {
        if (field->is_repeated()) {
          for (int j = 0; j < reflection->FieldSize(message, field) && j < 64; ++j) {
            strings_.push_back(reflection->GetRepeatedString(message, field, j));
          }
        } else if (field->type() == Field::TYPE_STRING) {
          strings_.push_back(reflection->GetString(message, field));
        }
      }
      if (field->cpp_type() != Field::CPPTYPE_MESSAGE || depth >= 8) continue;
      if (field->is_repeated()) {
        for (int j = 0; j < reflection->FieldSize(message, field); ++j) {
          Collect(*reflection->MutableRepeatedMessage(&message, field, j), depth + 1);
        }
      } else if (reflection->HasField(message, field)) {
        Collect(*reflection->MutableMessage(&message, field), depth + 1);
      }
    }
  }

  void Mutate(Message& message, const Field* field) {
    const auto* reflection = message.GetReflection();
    if (field->is_repeated()) {
      const int size = reflection->FieldSize(message, field);
      switch (size == 0 ? 0 : Below(4)) {
        case 0:  // add one
          if (field->cpp_type() == Field::CPPTYPE_MESSAGE) {
            Message* added = reflection->AddMessage(&message, field);
            if (size > 0 && OneIn(2)) added->CopyFrom(reflection->GetRepeatedMessage(message, field, Below(size)));
          } else {
            AddScalar(message, field);
          }
          return;
        case 1:  // remove the last (or one swapped there)
          reflection->SwapElements(&message, field, Below(size), size - 1);
          reflection->RemoveLast(&message, field);
          return;
        case 2:
          reflection->SwapElements(&message, field, Below(size), Below(size));
          return;
        default:
          SetRepeatedScalar(message, field, Below(size));
          return;
      }
    }
    switch (field->cpp_type()) {
      case Field::CPPTYPE_INT32:
        reflection->SetInt32(&message, field, static_cast<int32_t>(Integer(reflection->GetInt32(message, field))));
        break;
      case Field::CPPTYPE_INT64:
        reflection->SetInt64(&message, field, Integer(reflection->GetInt64(message, field)));
        break;
      case Field::CPPTYPE_UINT32:
        reflection->SetUInt32(&message, field, static_cast<uint32_t>(Integer(reflection->GetUInt32(message, field))));
        break;
      case Field::CPPTYPE_UINT64:
        reflection->SetUInt64(&message, field, static_cast<uint64_t>(Integer(static_cast<int64_t>(reflection->GetUInt64(message, field)))));
        break;
      case Field::CPPTYPE_DOUBLE: reflection->SetDouble(&message, field, Real()); break;
      case Field::CPPTYPE_FLOAT: reflection->SetFloat(&message, field, static_cast<float>(Real())); break;
      case Field::CPPTYPE_BOOL: reflection->SetBool(&message, field, !reflection->GetBool(message, field)); break;
      case Field::CPPTYPE_ENUM: {
        const auto* type = field->enum_type();
        reflection->SetEnum(&message, field, type->value(static_cast<int>(Below(type->value_count()))));
        break;
      }
      case Field::CPPTYPE_STRING:
        reflection->SetString(&message, field, Text(field, reflection->GetString(message, field)));
        break;
      case Field::CPPTYPE_MESSAGE:
        if (reflection->HasField(message, field) && OneIn(3)) {
          reflection->ClearField(&message, field);
        } else {
          MutateOnceInside(*reflection->MutableMessage(&message, field));
        }
        break;
    }
  }

  // A new or present sub-message gets a first field of its own.
  void MutateOnceInside(Message& message) {
    const auto* descriptor = message.GetDescriptor();
    if (descriptor->field_count() > 0) Mutate(message, descriptor->field(Below(descriptor->field_count())));
  }

  void AddScalar(Message& message, const Field* field) {
    const auto* reflection = message.GetReflection();
    switch (field->cpp_type()) {
      case Field::CPPTYPE_INT32: reflection->AddInt32(&message, field, static_cast<int32_t>(Integer(0))); break;
      case Field::CPPTYPE_INT64: reflection->AddInt64(&message, field, Integer(0)); break;
      case Field::CPPTYPE_UINT32: reflection->AddUInt32(&message, field, static_cast<uint32_t>(Integer(0))); break;
      case Field::CPPTYPE_UINT64: reflection->AddUInt64(&message, field, static_cast<uint64_t>(Integer(0))); break;
      case Field::CPPTYPE_DOUBLE: reflection->AddDouble(&message, field, Real()); break;
      case Field::CPPTYPE_FLOAT: reflection->AddFloat(&message, field, static_cast<float>(Real())); break;
      case Field::CPPTYPE_BOOL: reflection->AddBool(&message, field, OneIn(2)); break;
      case Field::CPPTYPE_ENUM: {
        const auto* type = field->enum_type();
        reflection->AddEnum(&message, field, type->value(static_cast<int>(Below(type->value_count()))));
        break;
      }
      case Field::CPPTYPE_STRING: reflection->AddString(&message, field, Text(field, "")); break;
      case Field::CPPTYPE_MESSAGE: break;
    }
  }

  void SetRepeatedScalar(Message& message, const Field* field, int index) {
    const auto* reflection = message.GetReflection();
    switch (field->cpp_type()) {
      case Field::CPPTYPE_INT32:
        reflection->SetRepeatedInt32(&message, field, index, static_cast<int32_t>(Integer(reflection->GetRepeatedInt32(message, field, index))));
        break;
      case Field::CPPTYPE_INT64:
        reflection->SetRepeatedInt64(&message, field, index, Integer(reflection->GetRepeatedInt64(message, field, index)));
        break;
      case Field::CPPTYPE_UINT32:
        reflection->SetRepeatedUInt32(&message, field, index, static_cast<uint32_t>(Integer(0)));
        break;
      case Field::CPPTYPE_UINT64:
        reflection->SetRepeatedUInt64(&message, field, index, static_cast<uint64_t>(Integer(0)));
        break;
      case Field::CPPTYPE_DOUBLE: reflection->SetRepeatedDouble(&message, field, index, Real()); break;
      case Field::CPPTYPE_FLOAT: reflection->SetRepeatedFloat(&message, field, index, static_cast<float>(Real())); break;
      case Field::CPPTYPE_BOOL: reflection->SetRepeatedBool(&message, field, index, OneIn(2)); break;
      case Field::CPPTYPE_ENUM: {
        const auto* type = field->enum_type();
        reflection->SetRepeatedEnum(&message, field, index, type->value(static_cast<int>(Below(type->value_count()))));
        break;
      }
      case Field::CPPTYPE_STRING:
        reflection->SetRepeatedString(&message, field, index, Text(field, reflection->GetRepeatedString(message, field, index)));
        break;
      case Field::CPPTYPE_MESSAGE:
        MutateOnceInside(*reflection->MutableRepeatedMessage(&message, field, index));
        break;
    }
  }

  std::mt19937_64 rng_;
  std::vector<std::string> dictionary_;
  std::vector<std::string> strings_;
  std::vector<Slot> slots_;
};

// The LLVMFuzzerCustomMutator body for a message type: structure-aware
// when the input parses, byte mutation when it does not (or one time in
// eight, so the parser's own error paths stay covered).
template <typename Proto, typename Extra>
size_t MutateProtoInput(uint8_t* data, size_t size, size_t max_size, unsigned seed,
                        const std::vector<std::string>& dictionary, Extra extra) {
  Proto message;
  ProtoMutator mutator(seed, dictionary);
  if (mutator.OneIn(8) || !message.ParseFromArray(data, static_cast<int>(size))) {
    return LLVMFuzzerMutate(data, size, max_size);
  }
  const int rounds = 1 + static_cast<int>(mutator.Below(3));
  for (int i = 0; i < rounds; ++i) {
    if (mutator.OneIn(2)) {
      extra(message, mutator);
    } else {
      mutator.MutateOnce(message);
    }
  }
  std::string out;
  if (!message.SerializeToString(&out) || out.size() > max_size) {
    return LLVMFuzzerMutate(data, size, max_size);
  }
  std::memcpy(data, out.data(), out.size());
  return out.size();
}

}  // namespace bonsai::fuzz

#endif  // BONSAI_TESTS_FUZZ_PROTO_MUTATOR_H_
