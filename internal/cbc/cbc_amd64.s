//go:build amd64 && !purego

#include "textflag.h"

// ROUND8 runs one decryption round (round key at off(AX)) on X0-X7.
#define ROUND8(off) \
	MOVOU off(AX), X8 \
	AESDEC X8, X0     \
	AESDEC X8, X1     \
	AESDEC X8, X2     \
	AESDEC X8, X3     \
	AESDEC X8, X4     \
	AESDEC X8, X5     \
	AESDEC X8, X6     \
	AESDEC X8, X7

// ROUND1 runs one decryption round (round key at off(AX)) on X0.
#define ROUND1(off) \
	MOVOU off(AX), X8 \
	AESDEC X8, X0

// CHAIN XORs block i (in Xi) with the ciphertext block before it.
#define CHAIN(prev, x) \
	MOVOU prev(SI), X9 \
	PXOR X9, x

// func decryptBlocks(dk *[15][16]byte, iv *[16]byte, dst, src *byte, n int)
//
// AES-256 (14 rounds) with the Equivalent Inverse Cipher's round keys dk.
// Eight blocks at a time: all eight are loaded, decrypted round by round
// (the AES unit pipelines them), XORed with the ciphertext blocks before
// them, and stored only after the next chaining value has been loaded, so
// that dst may be src. Then one block at a time for the rest. The last
// ciphertext block is left in *iv.
TEXT ·decryptBlocks(SB), NOSPLIT, $0-40
	MOVQ  dk+0(FP), AX
	MOVQ  iv+8(FP), BX
	MOVQ  dst+16(FP), DI
	MOVQ  src+24(FP), SI
	MOVQ  n+32(FP), CX
	MOVOU (BX), X15

eight:
	CMPQ  CX, $8
	JB    one
	MOVOU 0(SI), X0
	MOVOU 16(SI), X1
	MOVOU 32(SI), X2
	MOVOU 48(SI), X3
	MOVOU 64(SI), X4
	MOVOU 80(SI), X5
	MOVOU 96(SI), X6
	MOVOU 112(SI), X7
	MOVOU 0(AX), X8
	PXOR  X8, X0
	PXOR  X8, X1
	PXOR  X8, X2
	PXOR  X8, X3
	PXOR  X8, X4
	PXOR  X8, X5
	PXOR  X8, X6
	PXOR  X8, X7
	ROUND8(16)
	ROUND8(32)
	ROUND8(48)
	ROUND8(64)
	ROUND8(80)
	ROUND8(96)
	ROUND8(112)
	ROUND8(128)
	ROUND8(144)
	ROUND8(160)
	ROUND8(176)
	ROUND8(192)
	ROUND8(208)
	MOVOU      224(AX), X8
	AESDECLAST X8, X0
	AESDECLAST X8, X1
	AESDECLAST X8, X2
	AESDECLAST X8, X3
	AESDECLAST X8, X4
	AESDECLAST X8, X5
	AESDECLAST X8, X6
	AESDECLAST X8, X7
	PXOR       X15, X0
	CHAIN(0, X1)
	CHAIN(16, X2)
	CHAIN(32, X3)
	CHAIN(48, X4)
	CHAIN(64, X5)
	CHAIN(80, X6)
	CHAIN(96, X7)
	MOVOU      112(SI), X15
	MOVOU      X0, 0(DI)
	MOVOU      X1, 16(DI)
	MOVOU      X2, 32(DI)
	MOVOU      X3, 48(DI)
	MOVOU      X4, 64(DI)
	MOVOU      X5, 80(DI)
	MOVOU      X6, 96(DI)
	MOVOU      X7, 112(DI)
	ADDQ       $128, SI
	ADDQ       $128, DI
	SUBQ       $8, CX
	JMP        eight

one:
	TESTQ CX, CX
	JZ    done
	MOVOU (SI), X0
	MOVOU X0, X9
	MOVOU 0(AX), X8
	PXOR  X8, X0
	ROUND1(16)
	ROUND1(32)
	ROUND1(48)
	ROUND1(64)
	ROUND1(80)
	ROUND1(96)
	ROUND1(112)
	ROUND1(128)
	ROUND1(144)
	ROUND1(160)
	ROUND1(176)
	ROUND1(192)
	ROUND1(208)
	MOVOU      224(AX), X8
	AESDECLAST X8, X0
	PXOR       X15, X0
	MOVOU      X9, X15
	MOVOU      X0, (DI)
	ADDQ       $16, SI
	ADDQ       $16, DI
	DECQ       CX
	JMP        one

done:
	MOVOU X15, (BX)
	RET

// func invMixColumns(dst, src *[16]byte)
TEXT ·invMixColumns(SB), NOSPLIT, $0-16
	MOVQ   dst+0(FP), DI
	MOVQ   src+8(FP), SI
	MOVOU  (SI), X0
	AESIMC X0, X1
	MOVOU  X1, (DI)
	RET

// func encryptBlocks(ek *[15][16]byte, iv *[16]byte, dst, src *byte, n int)
//
// AES-256 encryption in CBC mode, one block after the other (each needs
// the one before): round keys 0-13 stay in X2-X15 for the whole loop, the
// chaining in X0, so a block costs its 14 rounds and nothing else. The
// last ciphertext block is left in *iv. dst may be src.
TEXT ·encryptBlocks(SB), NOSPLIT, $0-40
	MOVQ  ek+0(FP), AX
	MOVQ  iv+8(FP), BX
	MOVQ  dst+16(FP), DI
	MOVQ  src+24(FP), SI
	MOVQ  n+32(FP), CX
	MOVOU (BX), X0
	MOVOU 0(AX), X2
	MOVOU 16(AX), X3
	MOVOU 32(AX), X4
	MOVOU 48(AX), X5
	MOVOU 64(AX), X6
	MOVOU 80(AX), X7
	MOVOU 96(AX), X8
	MOVOU 112(AX), X9
	MOVOU 128(AX), X10
	MOVOU 144(AX), X11
	MOVOU 160(AX), X12
	MOVOU 176(AX), X13
	MOVOU 192(AX), X14
	MOVOU 208(AX), X15

enc:
	TESTQ      CX, CX
	JZ         encdone
	MOVOU      (SI), X1
	PXOR       X1, X0
	PXOR       X2, X0
	AESENC     X3, X0
	AESENC     X4, X0
	AESENC     X5, X0
	AESENC     X6, X0
	AESENC     X7, X0
	AESENC     X8, X0
	AESENC     X9, X0
	AESENC     X10, X0
	AESENC     X11, X0
	AESENC     X12, X0
	AESENC     X13, X0
	AESENC     X14, X0
	AESENC     X15, X0
	MOVOU      224(AX), X1
	AESENCLAST X1, X0
	MOVOU      X0, (DI)
	ADDQ       $16, SI
	ADDQ       $16, DI
	DECQ       CX
	JMP        enc

encdone:
	MOVOU X0, (BX)
	RET
