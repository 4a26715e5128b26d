import { describe, expect, it } from 'vitest';
import {
  callgrindTotal,
  categorise,
  costByCategory,
  parseAnnotate,
  parseAnnotateColumns,
  qualifiedName,
} from '../../../bench/lib/callgrind.ts';

// Head and tail of a dump written by `callgrind_control -d` (callgrind 3.19.0, bare-undici peer).
const DUMP = `# callgrind format
version: 1
creator: callgrind-3.19.0
pid: 2560
cmd:  /work/main/node_modules/node/bin/node --max-semi-space-size=8 /work/main/bench/peers/bare-undici.ts
part: 1

desc: Trigger: dump

positions: line
events: Ir
summary: 944600520


ob=(4) /usr/lib/x86_64-linux-gnu/libstdc++.so.6.0.30
fl=(18) ???
0 36687

totals: 944844722
`;

const NODE = '[/work/main/node_modules/node/bin/node]';
// Lines of `callgrind_annotate --threshold=100 --auto=no` output from such a dump.
const ANNOTATE = `--------------------------------------------------------------------------------
Ir                   
--------------------------------------------------------------------------------
944,600,520 (100.0%)  PROGRAM TOTALS

--------------------------------------------------------------------------------
Ir                   file:function
--------------------------------------------------------------------------------
76,228,512 ( 8.07%)  ???:Builtins_LoadIC ${NODE}
24,418,437 ( 2.59%)  ???:heap::base::SlotCallbackResult v8::internal::Scavenger::ScavengeObject<v8::internal::FullHeapObjectSlot>(v8::internal::FullHeapObjectSlot, v8::internal::Tagged<v8::internal::HeapObject>) ${NODE}
19,360,000 ( 2.05%)  ???:0x00000000280f1240 [???]
 3,031,967 ( 0.32%)  ???:v8::internal::compiler::GraphReducer::Reduce(v8::internal::compiler::Node*) ${NODE}
 1,394,386 ( 0.15%)  ???:v8::internal::MaybeHandle<v8::internal::Object> v8::internal::(anonymous namespace)::HandleApiCallHelper<true>(v8::internal::Isolate*, v8::internal::DirectHandle<v8::internal::HeapObject>, v8::internal::DirectHandle<v8::internal::FunctionTemplateInfo>, v8::internal::DirectHandle<v8::internal::Object>, unsigned long*, int) ${NODE}
    67,711 ( 0.01%)  ???:v8::internal::compiler::JSHeapBroker::TryGetOrCreateData(v8::internal::Tagged<v8::internal::Object>, v8::base::Flags<v8::internal::compiler::GetOrCreateDataFlag, int, int>) ${NODE}
    54,842 ( 0.01%)  ???:v8::internal::compiler::HeapObjectData::GetMapInstanceType() const'2 ${NODE}
     1,000 ( 0.00%)  ???:v8::internal::maglev::Jump::SetValueLocationConstraints() ${NODE}
       660 ( 0.00%)  ???:v8::internal::Heap::AllocateExternalBackingStore(std::function<void* (unsigned long)> const&, unsigned long) ${NODE}
`;

describe('callgrindTotal', () => {
  it('reads the totals: line of a dump, else its summary: line', () => {
    expect(callgrindTotal(DUMP)).toBe(944_844_722);
    expect(callgrindTotal(DUMP.replace(/^totals:.*$/m, ''))).toBe(944_600_520);
  });

  it('picks the Ir column when more events were recorded', () => {
    expect(callgrindTotal('events: Dr Ir\nsummary: 5 7\ntotals: 6 8\n')).toBe(8);
  });

  it('refuses a file without either line (a dump still being written)', () => {
    expect(() => callgrindTotal('# callgrind format\nevents: Ir\n')).toThrow(/no totals/);
  });
});

describe('parseAnnotate', () => {
  it('reads each function line, without the program total, the file and the object', () => {
    const fns = parseAnnotate(ANNOTATE);
    expect(fns).toHaveLength(9);
    expect(fns[0]).toEqual({ symbol: 'Builtins_LoadIC', ir: 76_228_512 });
    expect(fns[2]).toEqual({ symbol: '0x00000000280f1240', ir: 19_360_000 });
    expect(fns[8]!.symbol).toBe(
      'v8::internal::Heap::AllocateExternalBackingStore(std::function<void* (unsigned long)> const&, unsigned long)',
    );
  });
});

describe('qualifiedName', () => {
  it('drops the return type and the parameter list, keeps template arguments', () => {
    expect(
      qualifiedName(
        'heap::base::SlotCallbackResult v8::internal::Scavenger::ScavengeObject<v8::internal::FullHeapObjectSlot>(v8::internal::FullHeapObjectSlot, v8::internal::Tagged<v8::internal::HeapObject>)',
      ),
    ).toBe('v8::internal::Scavenger::ScavengeObject<v8::internal::FullHeapObjectSlot>');
    expect(qualifiedName('void v8::internal::Foo<std::pair<int, int> >::bar(int) const')).toBe(
      'v8::internal::Foo<std::pair<int, int> >::bar',
    );
  });

  it('keeps (anonymous namespace) and drops the recursion suffix', () => {
    expect(
      qualifiedName(
        'v8::internal::MaybeHandle<v8::internal::Object> v8::internal::(anonymous namespace)::HandleApiCallHelper<true>(v8::internal::Isolate*)',
      ),
    ).toBe('v8::internal::(anonymous namespace)::HandleApiCallHelper<true>');
    expect(qualifiedName("v8::internal::compiler::HeapObjectData::GetMapInstanceType() const'2")).toBe(
      'v8::internal::compiler::HeapObjectData::GetMapInstanceType',
    );
  });

  it('leaves names without a parameter list alone', () => {
    expect(qualifiedName('Builtins_LoadIC')).toBe('Builtins_LoadIC');
    expect(qualifiedName('0x00000000280f1240')).toBe('0x00000000280f1240');
  });
});

describe('categorise and costByCategory', () => {
  it('counts the compilers before the GC, and only by name: a HeapObject parameter is not GC', () => {
    const fns = parseAnnotate(ANNOTATE);
    expect(fns.map((f) => categorise(f.symbol))).toEqual([
      undefined,
      'gc',
      undefined,
      'compiler',
      undefined,
      'compiler',
      'compiler',
      'compiler',
      'gc',
    ]);
  });

  it("counts the GC's visit of the startup object cache as GC", () => {
    expect(
      categorise(
        'void v8::internal::(anonymous namespace)::IterateObjectCache(v8::internal::Isolate*, std::vector<v8::internal::Tagged<v8::internal::Object>, std::allocator<v8::internal::Tagged<v8::internal::Object> > >*, v8::internal::Root, v8::internal::RootVisitor*)',
      ),
    ).toBe('gc');
  });

  it('sums self cost by category', () => {
    expect(costByCategory(ANNOTATE)).toEqual({
      total: 76_228_512 + 24_418_437 + 19_360_000 + 3_031_967 + 1_394_386 + 67_711 + 54_842 + 1000 + 660,
      compiler: 3_031_967 + 67_711 + 54_842 + 1000,
      gc: 24_418_437 + 660,
      scavenge: 24_418_437,
    });
  });

  // `callgrind_annotate --show=Ir,I1mr,D1mr,D1mw` of a dump made with --cache-sim=yes (callgrind
  // 3.19.0): zeros print as `.` or `0`, JIT code has no object.
  const COLUMNS = `Ir                   I1mr             D1mr             D1mw              file:function
--------------------------------------------------------------------------------
1,415,668,044 (100.0%) 40,142,135 (100.0%) 22,092,539 (100.0%) 3,139,296 (100.0%)  PROGRAM TOTALS
 8,549,565 ( 0.60%)    454,478 ( 1.13%)  167,360 ( 0.76%)   65,864 ( 2.10%)  ./malloc/./malloc/malloc.c:_int_malloc [/usr/lib/x86_64-linux-gnu/libc.so.6]
29,461,614 ( 2.08%)        242 ( 0.00%)        0                .           ???:v8::internal::Foo::Bar(int) ${NODE}
11,869,253 ( 0.84%)    970,115 ( 2.42%)  451,321 ( 2.04%)   18,345 ( 0.58%)  ???:0x000000002822c1c0 [???]
`;

  it('reads every shown event of a function, with its object', () => {
    expect(parseAnnotateColumns(COLUMNS, 4)).toEqual([
      {
        symbol: '_int_malloc',
        object: '/usr/lib/x86_64-linux-gnu/libc.so.6',
        costs: [8_549_565, 454_478, 167_360, 65_864],
      },
      {
        symbol: 'v8::internal::Foo::Bar(int)',
        object: '/work/main/node_modules/node/bin/node',
        costs: [29_461_614, 242, 0, 0],
      },
      { symbol: '0x000000002822c1c0', object: '???', costs: [11_869_253, 970_115, 451_321, 18_345] },
    ]);
  });

  it('reads no function lines when fewer events are shown than asked for', () => {
    expect(parseAnnotateColumns(ANNOTATE, 4)).toEqual([]);
  });
});
